"""HTTP: providers (key write-only), models and prices, LLM calls, budgets."""

from __future__ import annotations

import httpx

from agentplane.db.pool import Database
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext
from tests.conftest import make_tenant
from tests.llm.helpers import MESSAGES, row, tenant
from tests.llm.vendors import KEY, OpenAIHandler, serve


async def test_provider_crud_never_returns_the_key(client: httpx.AsyncClient, db: Database) -> None:
    t = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        r = await client.post(
            "/v1/llm/providers",
            headers=t.headers,
            json={
                "name": "openai",
                "type": "openai_compatible",
                "base_url": vendor.url + "/v1",
                "api_key": KEY,
                "model": "gpt-4o-mini",
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["has_api_key"] is True and KEY not in r.text
        listed = await client.get("/v1/llm/providers", headers=t.headers)
        assert {p["name"] for p in listed.json()} == {
            "openai",
            "offline",
        } and KEY not in listed.text
        tested = await client.post("/v1/llm/providers/openai/test", headers=t.headers)
        assert tested.status_code == 200, tested.text
        body = tested.json()
        assert (
            body["prompt_tokens"] > 0 and body["completion_tokens"] > 0 and body["latency_ms"] >= 0
        )
        assert vendor.requests[-1]["headers"]["Authorization"] == f"Bearer {KEY}"
    r = await client.patch("/v1/llm/providers/openai", headers=t.headers, json={"enabled": False})
    assert r.json()["enabled"] is False and KEY not in r.text
    assert (await client.delete("/v1/llm/providers/openai", headers=t.headers)).status_code == 204
    assert (await client.get("/v1/llm/providers/openai", headers=t.headers)).status_code == 404


async def test_bad_provider_input_is_422_and_writes_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await tenant(db)
    for body, field in [
        ({"name": "x", "type": "gemini"}, "type"),
        ({"name": "x", "type": "openai_compatible", "base_url": "htp:/broken"}, "base_url"),
        ({"name": "x", "type": "offline", "config": {"timeout": -1}}, None),
    ]:
        r = await client.post("/v1/llm/providers", headers=t.headers, json=body)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
        if field:
            assert field in r.json()["detail"]
    n = await row(db, "SELECT count(*) AS n FROM llm_providers WHERE tenant_id = %s", t.tenant_id)
    assert n["n"] == 0


async def test_provider_error_over_http_hides_the_key(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        wrong = "sk-live-abcdefghijklmnop0123456789"
        await client.post(
            "/v1/llm/providers",
            headers=t.headers,
            json={
                "name": "bad",
                "type": "openai_compatible",
                "base_url": vendor.url + "/v1",
                "api_key": wrong,
                "model": "gpt-4o",
            },
        )
        r = await client.post("/v1/llm/providers/bad/test", headers=t.headers)
    assert r.status_code == 502 and "answered 401" in r.json()["detail"]
    assert wrong not in r.text and wrong[-4:] not in r.text


async def test_scopes_are_enforced(client: httpx.AsyncClient, db: Database) -> None:
    viewer = await make_tenant(db, scopes=["llm:read"])
    r = await client.post(
        "/v1/llm/providers", headers=viewer.headers, json={"name": "x", "type": "offline"}
    )
    assert r.status_code == 403
    assert (await client.get("/v1/llm/providers")).status_code == 401
    assert (await client.get("/v1/sessions", headers=viewer.headers)).status_code == 403


async def test_models_and_price_history(client: httpx.AsyncClient, db: Database) -> None:
    t = await tenant(db)
    r = await client.post(
        "/v1/llm/models",
        headers=t.headers,
        json={
            "provider": "openai",
            "name": "gpt-4o",
            "context_window": 128000,
            "price": {
                "input_per_mtok": "2.00",
                "output_per_mtok": "8.00",
                "valid_from": "2025-01-01T00:00:00Z",
            },
        },
    )
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    r = await client.post(
        f"/v1/llm/models/{model_id}/prices",
        headers=t.headers,
        json={"input_per_mtok": "3", "output_per_mtok": "9"},
    )
    assert r.status_code == 201
    listed = (await client.get("/v1/llm/models?provider=openai", headers=t.headers)).json()
    mine = next(m for m in listed if m["id"] == model_id)
    assert [p["input_per_mtok"] for p in mine["prices"]] == ["3", "2"]  # written plainly
    assert any(m["builtin"] and m["name"] == "gpt-4o" for m in listed)
    bad = await client.post(
        f"/v1/llm/models/{model_id}/prices",
        headers=t.headers,
        json={"input_per_mtok": "-1", "output_per_mtok": "1"},
    )
    assert bad.status_code == 422
    builtin = next(m for m in listed if m["builtin"])
    r = await client.post(
        f"/v1/llm/models/{builtin['id']}/prices",
        headers=t.headers,
        json={"input_per_mtok": "1", "output_per_mtok": "1"},
    )
    assert r.status_code == 409
    dup = await client.post(
        "/v1/llm/models", headers=t.headers, json={"provider": "openai", "name": "gpt-4o"}
    )
    assert dup.status_code == 409


async def test_llm_calls_listing_with_filters(client: httpx.AsyncClient, db: Database) -> None:
    t = await tenant(db)
    llm = LLM(db, db.settings)
    sid = (
        await client.post("/v1/sessions", headers=t.headers, json={"token_budget": 100000})
    ).json()["id"]
    await llm.complete(
        CallContext(tenant_id=t.tenant_id, session_id=sid), ChatRequest(messages=MESSAGES)
    )
    for _ in range(2):
        await llm.complete(CallContext(tenant_id=t.tenant_id), ChatRequest(messages=MESSAGES))
    everything = (await client.get("/v1/llm-calls", headers=t.headers)).json()
    assert len(everything) == 3 and everything[0]["created_at"] >= everything[-1]["created_at"]
    in_session = (await client.get(f"/v1/llm-calls?session_id={sid}", headers=t.headers)).json()
    assert len(in_session) == 1 and in_session[0]["session_id"] == sid
    page = (
        await client.get(f"/v1/llm-calls?before={everything[0]['id']}&limit=1", headers=t.headers)
    ).json()
    assert [c["id"] for c in page] == [everything[1]["id"]]
    one = await client.get(f"/v1/llm-calls/{everything[0]['id']}", headers=t.headers)
    assert one.json()["provider"] == "offline"
    bad = await client.get("/v1/llm-calls?status=weird", headers=t.headers)
    assert bad.status_code == 422
    other = await tenant(db)
    assert (
        await client.get(f"/v1/llm-calls/{everything[0]['id']}", headers=other.headers)
    ).status_code == 404
    usage = (await client.get("/v1/usage/records", headers=t.headers)).json()
    assert len(usage) == 3
    budget = (await client.get("/v1/usage/budget", headers=t.headers)).json()
    assert budget["monthly_token_usage"] == sum(u["total_tokens"] for u in usage)


async def test_api_key_budget_over_http(client: httpx.AsyncClient, db: Database) -> None:
    t = await tenant(db)
    r = await client.put(
        f"/v1/api-keys/{t.api_key_id}/budget", headers=t.headers, json={"token_budget": 10}
    )
    assert r.status_code == 200 and r.json()["token_budget"] == 10
    assert (
        await client.put(
            f"/v1/api-keys/{t.api_key_id}/budget", headers=t.headers, json={"token_budget": -1}
        )
    ).status_code == 422
    tested = await client.post("/v1/llm/providers/offline/test", headers=t.headers)
    assert tested.status_code == 402
    assert tested.json()["budget"] == "api_key"
    assert tested.json()["type"].endswith("/budget-exceeded")


async def test_provider_updates_refuse_bad_input_clearly(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await tenant(db)
    created = await client.post(
        "/v1/llm/providers",
        headers=t.headers,
        json={"name": "vllm", "type": "openai_compatible", "base_url": "http://gpu-box:8000/v1"},
    )
    assert created.status_code == 201, created.text
    await client.post("/v1/llm/providers", headers=t.headers, json={"name": "o", "type": "offline"})
    before = await row(
        db, "SELECT * FROM llm_providers WHERE tenant_id = %s AND name = 'o'", t.tenant_id
    )
    for ref, body, message in [
        ("o", {"base_url": "http://example.com/v1"}, "offline provider takes no base_url"),
        ("o", {"api_key": "sk-nope"}, "offline provider takes no base_url or api_key"),
        ("vllm", {"base_url": "htp:/broken"}, "base_url"),
        ("vllm", {"type": "anthropic"}, "type"),
        ("vllm", {"config": {"timeout": -1}}, "config: timeout"),
    ]:
        r = await client.patch(f"/v1/llm/providers/{ref}", headers=t.headers, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert message in r.text, (body, r.text)
    after = await row(
        db, "SELECT * FROM llm_providers WHERE tenant_id = %s AND name = 'o'", t.tenant_id
    )
    assert after == before
    dup = await client.post(
        "/v1/llm/providers", headers=t.headers, json={"name": "vllm", "type": "offline"}
    )
    assert dup.status_code == 409 and "a provider named vllm already exists" in dup.text
    # A null base_url restores the type's default, as on creation (the column needs one).
    r = await client.patch("/v1/llm/providers/vllm", headers=t.headers, json={"base_url": None})
    assert r.status_code == 200 and r.json()["base_url"] == "https://api.openai.com/v1"


async def test_models_crud(client: httpx.AsyncClient, db: Database) -> None:
    t = await tenant(db)
    r = await client.post(
        "/v1/llm/models",
        headers=t.headers,
        json={
            "provider": "vllm",
            "name": "llama-3-8b",
            "context_window": 8192,
            "price": {"input_per_mtok": "0.05", "output_per_mtok": "0.10"},
        },
    )
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    assert [float(p["input_per_mtok"]) for p in r.json()["prices"]] == [0.05]
    dup = await client.post(
        "/v1/llm/models", headers=t.headers, json={"provider": "vllm", "name": "llama-3-8b"}
    )
    assert dup.status_code == 409 and "vllm/llama-3-8b already" in dup.text
    listed = (await client.get("/v1/llm/models?provider=vllm", headers=t.headers)).json()
    assert [m["id"] for m in listed] == [model_id]
    other = await tenant(db)
    assert (await client.get("/v1/llm/models?provider=vllm", headers=other.headers)).json() == []
    assert (
        await client.delete(f"/v1/llm/models/{model_id}", headers=other.headers)
    ).status_code == 404
    # One model; its context window changes, a bad value is refused and changes nothing.
    one = await client.get(f"/v1/llm/models/{model_id}", headers=t.headers)
    assert one.status_code == 200 and one.json()["context_window"] == 8192
    assert len(one.json()["prices"]) == 1
    r = await client.patch(
        f"/v1/llm/models/{model_id}", headers=t.headers, json={"context_window": 131072}
    )
    assert r.status_code == 200 and r.json()["context_window"] == 131072
    for bad in ({"context_window": 0}, {"context_window": "big"}, {"name": "x"}, {}):
        r = await client.patch(f"/v1/llm/models/{model_id}", headers=t.headers, json=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (await client.get(f"/v1/llm/models/{model_id}", headers=t.headers)).json()[
        "context_window"
    ] == 131072
    for method in ("GET", "PATCH"):
        r = await client.request(
            method, f"/v1/llm/models/{model_id}", headers=other.headers,
            json={"context_window": 1} if method == "PATCH" else None,
        )
        assert r.status_code == 404, r.text
    assert (await client.delete(f"/v1/llm/models/{model_id}", headers=t.headers)).status_code == 204
    assert (await client.get(f"/v1/llm/models/{model_id}", headers=t.headers)).status_code == 404
    assert (await client.get("/v1/llm/models?provider=vllm", headers=t.headers)).json() == []
    prices = await row(db, "SELECT count(*) AS n FROM llm_prices WHERE model_id = %s", model_id)
    assert prices["n"] == 0
    builtin = (await client.get("/v1/llm/models?provider=openai", headers=t.headers)).json()[0]
    r = await client.delete(f"/v1/llm/models/{builtin['id']}", headers=t.headers)
    assert r.status_code == 409 and "built-in" in r.json()["detail"]
    r = await client.patch(
        f"/v1/llm/models/{builtin['id']}", headers=t.headers, json={"context_window": 1}
    )
    assert r.status_code == 409 and "built-in" in r.json()["detail"]
    assert (await client.get(f"/v1/llm/models/{builtin['id']}", headers=t.headers)).json()[
        "context_window"
    ] == builtin["context_window"]


async def test_a_negative_tenant_token_limit_is_refused(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await tenant(db, token_limit=5000)
    r = await client.patch(
        f"/v1/tenants/{t.tenant_id}", headers=t.headers, json={"token_limit": -1}
    )
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    assert "token_limit" in r.text
    limit = await row(db, "SELECT token_limit FROM tenants WHERE id = %s", t.tenant_id)
    assert limit["token_limit"] == 5000
