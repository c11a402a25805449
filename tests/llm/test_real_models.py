"""Plugging in a real model: agents and runs name only providers that exist, a run's
--model, the default agent following the tenant's default provider, prices found by
the model's own name, and provider tests that fail fast and say why. Against local
servers speaking the vendors' protocols, through the real adapters."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal

import httpx

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext
from agentplane.llm.errors import ProviderTimeout
from tests.conftest import TenantContext
from tests.llm.helpers import MESSAGES, row
from tests.llm.vendors import KEY, OpenAIHandler, serve
from tests.runtime.helpers import settle, tenant, worker

GPT_4O = (Decimal("2.50"), Decimal("10.00"))  # the built-in price of openai/gpt-4o


async def add_provider(
    client: httpx.AsyncClient, ctx: TenantContext, name: str, url: str, **body: object
) -> None:
    r = await client.post(
        "/v1/llm/providers",
        json={"name": name, "type": "openai_compatible", "base_url": f"{url}/v1",
              "api_key": KEY, **body},
        headers=ctx.headers,
    )
    assert r.status_code == 201, r.text


async def test_an_agent_naming_a_missing_provider_is_refused(
    db: Database, client: httpx.AsyncClient
) -> None:
    ctx = await tenant(db)
    body = {"id": "writer", "name": "Writer", "role": "writer", "model": "opneai/gpt-4o"}
    r = await client.post("/v1/agents", json=body, headers=ctx.headers)
    assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["errors"][0]["field"] == "model"
    assert "no provider 'opneai'" in problem["detail"] and "offline" in problem["detail"]
    assert (await row(db, "SELECT count(*) AS n FROM agents WHERE tenant_id = %s",
                      ctx.tenant_id))["n"] == 0
    for model in ("/gpt-4o", "openai/"):
        r = await client.post("/v1/agents", json={**body, "model": model}, headers=ctx.headers)
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "model", r.text

    # Built-in providers always exist; a bare model name goes to the default provider.
    for model in ("offline/offline-1", "gpt-4o"):
        r = await client.post("/v1/agents", json={**body, "id": model.replace("/", "-")
                                                  .replace(".", "-"), "model": model},
                              headers=ctx.headers)
        assert r.status_code == 201, r.text
    r = await client.patch("/v1/agents/gpt-4o", json={"model": "nope/x"}, headers=ctx.headers)
    assert r.status_code == 422 and "no provider 'nope'" in r.json()["detail"]
    r = await client.get("/v1/agents/gpt-4o", headers=ctx.headers)
    assert r.json()["model"] == "gpt-4o"


async def test_a_run_takes_a_model_and_prices_it_by_its_name(
    db: Database, client: httpx.AsyncClient, settings: Settings
) -> None:
    ctx = await tenant(db)
    r = await client.post("/v1/runs", json={"query": "hi", "model": "work-openai/gpt-4o"},
                          headers=ctx.headers)
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "model", r.text
    assert (await row(db, "SELECT count(*) AS n FROM runs WHERE tenant_id = %s",
                      ctx.tenant_id))["n"] == 0
    with serve(OpenAIHandler) as vendor:
        await add_provider(client, ctx, "work-openai", vendor.url, weight=0)
        r = await client.post("/v1/runs", json={"query": "Name a colour.",
                                                "model": "work-openai/gpt-4o"},
                              headers=ctx.headers)
        assert r.status_code == 201, r.text
        assert r.json()["model"] == "work-openai/gpt-4o"
        async with worker(db, settings):
            run = await settle(client, ctx, r.json()["id"])
    assert run["status"] == "completed", run
    assert vendor.requests and vendor.requests[-1]["body"]["model"] == "gpt-4o"
    call = await row(db, "SELECT provider, model, prompt_tokens, completion_tokens, cost_usd, "
                         "cost_source FROM llm_calls WHERE run_id = %s", run["id"])
    assert (call["provider"], call["model"], call["cost_source"]) == (
        "work-openai", "gpt-4o", "price")
    expected = (call["prompt_tokens"] * GPT_4O[0]
                + call["completion_tokens"] * GPT_4O[1]) / 1_000_000
    assert call["cost_usd"] == expected > 0
    assert Decimal(run["total_cost_usd"]) == expected and run["cost_complete"] is True


async def test_prices_by_model_name_whoever_serves_it(db: Database, client: httpx.AsyncClient,
                                                       settings: Settings) -> None:
    """The provider's own price, else its family's, else any built-in one of that model;
    a tenant's own price for the provider/model wins over them all."""
    ctx = await tenant(db)
    llm = LLM(db, settings)
    with serve(OpenAIHandler) as vendor:
        await add_provider(client, ctx, "work-openai", vendor.url, model="gpt-4o")
        # An anthropic-type name serving an OpenAI model: no family price, the built-in one.
        r = await client.post(
            "/v1/llm/providers",
            json={"name": "proxy", "type": "openai_compatible", "base_url": f"{vendor.url}/v1",
                  "api_key": KEY, "model": "claude-3-5-haiku-latest"},
            headers=ctx.headers,
        )
        assert r.status_code == 201, r.text
        out = await llm.complete(CallContext(ctx.tenant_id), ChatRequest(messages=MESSAGES),
                                 provider="work-openai")
        res = out.result
        assert out.cost_source == "price"
        assert out.cost_usd == (res.prompt_tokens * GPT_4O[0]
                                + res.completion_tokens * GPT_4O[1]) / 1_000_000
        out = await llm.complete(CallContext(ctx.tenant_id), ChatRequest(messages=MESSAGES),
                                 provider="proxy")
        assert out.cost_source == "price" and out.cost_usd and out.cost_usd > 0

        r = await client.post(
            "/v1/llm/models",
            json={"provider": "work-openai", "name": "gpt-4o",
                  "price": {"input_per_mtok": "1000", "output_per_mtok": "1000"}},
            headers=ctx.headers,
        )
        assert r.status_code == 201, r.text
        out = await llm.complete(CallContext(ctx.tenant_id), ChatRequest(messages=MESSAGES),
                                 provider="work-openai")
        res = out.result
        assert out.cost_usd == Decimal(res.prompt_tokens + res.completion_tokens) / 1000

        out = await llm.complete(CallContext(ctx.tenant_id),
                                 ChatRequest(messages=MESSAGES, model="my-local-llama"),
                                 provider="work-openai")
        assert (out.cost_usd, out.cost_source) == (None, "unknown")


async def test_a_query_run_uses_the_tenants_default_provider(
    db: Database, client: httpx.AsyncClient, settings: Settings
) -> None:
    ctx = await tenant(db)
    r = await client.post("/v1/runs", json={"query": "before"}, headers=ctx.headers)
    assert r.status_code == 201 and r.json()["model"] is None  # offline: nothing registered
    with serve(OpenAIHandler) as vendor:
        await add_provider(client, ctx, "mine", vendor.url, model="gpt-4o-mini")
        r = await client.post("/v1/runs", json={"query": "Say hello."}, headers=ctx.headers)
        assert r.status_code == 201 and r.json()["model"] == "mine/gpt-4o-mini", r.text
        async with worker(db, settings):
            run = await settle(client, ctx, r.json()["id"])
    assert run["status"] == "completed", run
    assert [q["body"]["model"] for q in vendor.requests] == ["gpt-4o-mini"]
    r = await client.get("/v1/agents/assistant", headers=ctx.headers)
    assert r.json()["model"] == "offline/offline-1"  # the agent itself is left as it was
    # An assistant whose model someone chose keeps it.
    r = await client.patch("/v1/agents/assistant", json={"model": "offline/offline-1"},
                           headers=ctx.headers)
    assert r.status_code == 200
    await client.patch("/v1/agents/assistant", json={"model": "offline/offline-2"},
                       headers=ctx.headers)
    r = await client.post("/v1/runs", json={"query": "again"}, headers=ctx.headers)
    assert r.json()["model"] is None


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts connections (the kernel does, from the backlog) and never answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


async def test_a_provider_that_never_answers(
    db: Database, client: httpx.AsyncClient, settings: Settings, cli
) -> None:
    ctx = await tenant(db)
    with silent_server() as url:
        await add_provider(client, ctx, "mute", url, model="gpt-4o",
                           config={"timeout": 0.5, "max_retries": 2, "backoff": 0})
        started = time.monotonic()
        r = await client.post("/v1/llm/providers/mute/test", headers=ctx.headers)
        assert r.status_code == 504, r.text
        assert r.json()["detail"] == "provider mute: no answer in 1 attempt of 0.5 s each"
        assert time.monotonic() - started < 1.4  # one attempt, not three

        r = cli("providers", "test", "--tenant", ctx.slug, "mute")
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert "provider mute: no answer in 1 attempt of 0.5 s each" in r.stderr

        # An ordinary call retries as configured, and says so.
        llm = LLM(db, settings)
        try:
            await llm.complete(CallContext(ctx.tenant_id), ChatRequest(messages=MESSAGES),
                               provider="mute")
        except ProviderTimeout as exc:
            assert exc.detail == "provider mute: no answer in 3 attempts of 0.5 s each"
        else:
            raise AssertionError("a provider that never answers gave an answer")
    failed = await row(db, "SELECT count(*) AS n FROM llm_calls WHERE tenant_id = %s "
                           "AND status = 'failed'", ctx.tenant_id)
    assert failed["n"] == 3
