"""What a gateway call is filed under (x-agentplane-project, x-agentplane-tags) and the
tenant's response cache, through the openai SDK against the live server."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from agentplane.db.pool import Database
from agentplane.gateway.routing import ROUTE_TTL_S
from tests.conftest import make_tenant
from tests.gateway.helpers import NO_HOLD, add_provider, rows, settled
from tests.llm.vendors import KEY

ASK = [{"role": "user", "content": "Name a river."}]


def sdk(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


async def test_calls_are_found_by_project_and_tag(db: Database, url: str) -> None:
    t = await make_tenant(db)
    async with httpx.AsyncClient(base_url=url, headers=t.headers) as api:
        made = await api.post("/v1/projects", json={"name": "Search", "slug": "search"})
        assert made.status_code == 201, made.text
        project_id = made.json()["id"]
        with sdk(url, t.api_key) as client:
            filed = client.chat.completions.with_raw_response.create(
                model="offline", messages=ASK, max_tokens=16,
                extra_headers={"x-agentplane-project": "search",
                               "x-agentplane-tags": "exp:a, team=ml,exp:a"})
            client.chat.completions.create(  # by its id this time, and the cached lookup
                model="offline", messages=ASK, max_tokens=16,
                extra_headers={"x-agentplane-project": project_id})
            client.chat.completions.create(model="offline", messages=ASK, max_tokens=16)
            with pytest.raises(openai.BadRequestError) as bad:
                client.chat.completions.create(
                    model="offline", messages=ASK, extra_headers={"x-agentplane-tags": "ok,b@d"})
            with pytest.raises(openai.NotFoundError) as ghost:
                client.chat.completions.create(
                    model="offline", messages=ASK, extra_headers={"x-agentplane-project": "ghost"})
        call_id = filed.headers["x-agentplane-call-id"]
        assert bad.value.body["param"] == "x-agentplane-tags" and "b@d" in bad.value.message
        assert ghost.value.body["param"] == "x-agentplane-project"

        in_project = (await api.get("/v1/llm-calls", params={"project": "search"})).json()
        assert len(in_project) == 2
        assert {c["project_id"] for c in in_project} == {project_id}
        tagged = (await api.get("/v1/llm-calls", params={"tag": "team=ml"})).json()
        assert [c["id"] for c in tagged] == [call_id]
        assert tagged[0]["tags"] == ["exp:a", "team=ml"]  # each once, in the order given
        assert (await api.get("/v1/llm-calls", params={"tag": "exp:b"})).json() == []
        assert len((await api.get("/v1/llm-calls")).json()) == 3  # nothing for the refused
        unknown = await api.get("/v1/llm-calls", params={"project": "ghost"})
        assert unknown.status_code == 404 and "ghost" in unknown.json()["detail"]

    # Another tenant's project is not found by its id, nor its calls by their project.
    other = await make_tenant(db)
    with sdk(url, other.api_key) as client, pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="offline", messages=ASK,
                                       extra_headers={"x-agentplane-project": project_id})
    async with httpx.AsyncClient(base_url=url, headers=other.headers) as api:
        assert (await api.get("/v1/llm-calls", params={"project": project_id})).status_code == 404


async def cache_on(api: httpx.AsyncClient, tenant_id, ttl: int = 600) -> None:
    r = await api.patch(f"/v1/tenants/{tenant_id}", json={"settings": {"llm_cache_ttl_s": ttl}})
    assert r.status_code == 200, r.text
    await asyncio.sleep(ROUTE_TTL_S)  # until the server reads its routes (and settings) again


async def test_the_response_cache(db: Database, settings, url: str, vendor) -> None:
    t = await make_tenant(db)
    await add_provider(db, settings, t.tenant_id, name="up", type="openai_compatible",
                       base_url=vendor.url + "/v1", api_key=KEY, model="gpt-4o-mini")
    asked = len(vendor.requests)
    async with httpx.AsyncClient(base_url=url, headers=t.headers) as api:
        with sdk(url, t.api_key) as client:
            def ask(**kw):
                return client.chat.completions.with_raw_response.create(
                    **{"model": "up", "messages": ASK, "max_tokens": 32, "temperature": 0, **kw})

            off = ask()  # no cache until the tenant turns it on
            assert "x-agentplane-cache" not in off.headers
            await cache_on(api, t.tenant_id)
            first, second = ask(), ask()
            assert (first.headers["x-agentplane-cache"], second.headers["x-agentplane-cache"]) \
                == ("miss", "hit")
            assert second.parse().choices[0].message.content \
                == first.parse().choices[0].message.content
            assert second.parse().id != first.parse().id
            assert len(vendor.requests) == asked + 2  # the hit called no one
            ask(temperature=0.5)  # another request
            ask(extra_headers={"Cache-Control": "no-store"})
            assert len(vendor.requests) == asked + 4
            streamed = client.chat.completions.create(
                model="up", messages=ASK, max_tokens=32, temperature=0, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
            assert len(vendor.requests) == asked + 5

        hit = (await api.get("/v1/llm-calls", params={"cached": "true"})).json()
        assert [c["id"] for c in hit] == [second.headers["x-agentplane-call-id"]]
        assert hit[0]["cost_usd"] == "0" and hit[0]["cost_source"] == "cache"
        assert hit[0]["prompt_tokens"] == hit[0]["completion_tokens"] == 0
        assert hit[0]["response_content"] == second.parse().choices[0].message.content
    calls = await rows(db, "SELECT cached FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    records = await rows(db, "SELECT 1 FROM usage_records WHERE tenant_id = %s", t.tenant_id)
    assert len(calls) == 6 and len(records) == 5  # the hit spent nothing, so no usage record
    assert await settled(db, t.tenant_id) == NO_HOLD

    # Another tenant asking the same gets its own answer, and sees none of t's cache.
    other = await make_tenant(db)
    await add_provider(db, settings, other.tenant_id, name="up", type="openai_compatible",
                       base_url=vendor.url + "/v1", api_key=KEY, model="gpt-4o-mini")
    async with httpx.AsyncClient(base_url=url, headers=other.headers) as api:
        await cache_on(api, other.tenant_id)
        with sdk(url, other.api_key) as client:
            theirs = client.chat.completions.with_raw_response.create(
                model="up", messages=ASK, max_tokens=32, temperature=0)
        assert theirs.headers["x-agentplane-cache"] == "miss"
    async with db.tenant_connection(other.tenant_id) as conn:
        cur = await conn.execute("SELECT tenant_id FROM gateway_cache")
        assert {r["tenant_id"] for r in await cur.fetchall()} == {other.tenant_id}

    # An expired answer is not served, and the system task deletes it.
    await rows(db, "UPDATE gateway_cache SET expires_at = now() - interval '1 second' "
               "WHERE tenant_id = %s RETURNING 1", t.tenant_id)
    with sdk(url, t.api_key) as client:
        again = client.chat.completions.with_raw_response.create(
            model="up", messages=ASK, max_tokens=32, temperature=0.5)
    assert again.headers["x-agentplane-cache"] == "miss"
    async with db.admin_connection() as conn:
        from agentplane.ops import store as ops_store

        assert await ops_store.expire_cached_answers(conn) >= 1
    left = await rows(db, "SELECT 1 FROM gateway_cache WHERE expires_at < now()")
    assert left == []


async def test_cache_settings_are_checked(db: Database, url: str) -> None:
    t = await make_tenant(db)
    async with httpx.AsyncClient(base_url=url, headers=t.headers) as api:
        for settings in ({"llm_cache_ttl_s": -1}, {"llm_cache_ttl_s": "600"},
                         {"llm_cache_ttl_s": 10**9}, {"llm_content": "sometimes"}):
            r = await api.patch(f"/v1/tenants/{t.tenant_id}", json={"settings": settings})
            assert r.status_code == 422, (settings, r.text)
            assert "settings" in r.text
        got = (await api.get(f"/v1/tenants/{t.tenant_id}")).json()
        assert got["settings"] == {}
