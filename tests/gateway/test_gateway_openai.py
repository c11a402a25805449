"""The official openai SDK (sync and async) against the gateway served on a real port,
with a local OpenAI-protocol vendor upstream: what the app sees, and what is recorded."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import openai
import pytest

from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.gateway.helpers import (
    NO_HOLD,
    add_provider,
    gateway_tenant,
    live_server,
    one,
    raw_stream,
    rows,
    settled,
)
from tests.llm.vendors import KEY

ASK = [{"role": "user", "content": "What is the capital of Norway?"}]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web",
            "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                           "required": ["q"]},
        },
    }
]


@pytest.fixture
def fresh(vendor):
    vendor.queue.clear()
    vendor.chunk_delay, vendor.drop_after, vendor.delay = 0.0, None, 0.0
    return vendor


async def with_vendor(db: Database, settings: Settings, vendor, **kw):
    """A tenant, its key (llm:invoke only) and a provider `up` at the vendor."""
    t = await gateway_tenant(db, **kw)
    await add_provider(db, settings, t.tenant_id, name="up", type="openai_compatible",
                       base_url=vendor.url + "/v1", api_key=KEY, model="gpt-4o-mini")
    return t


async def session(db: Database, t, budget: int, **kw) -> object:
    """A session of t's user (as POST /v1/sessions makes it with t's key)."""
    from agentplane.sessions import service
    from agentplane.sessions.models import SessionCreate

    async with db.tenant_connection(t.tenant_id) as conn:
        made = await service.create(conn, t.user_id, SessionCreate(token_budget=budget, **kw))
    return made.id


_open: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open:
        _open.pop().close()


def sdk(url: str, key: str, **kw) -> openai.OpenAI:
    """A client of the gateway, closed after the test."""
    client = openai.OpenAI(base_url=url + "/v1", api_key=key, **kw)
    _open.append(client)
    return client


async def test_chat_with_the_offline_model(db: Database, url: str) -> None:
    t = await gateway_tenant(db)
    answer = sdk(url, t.api_key).chat.completions.with_raw_response.create(
        model="offline/offline-1", messages=ASK
    )
    completion = answer.parse()
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content.startswith(
        ("Here is", "Understood", "Working", "Short")
    )
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    assert answer.headers["x-request-id"]
    assert float(answer.headers["x-agentplane-overhead-ms"]) >= 0
    call = await one(db, "SELECT * FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert completion.id == "chatcmpl-" + call["id"].hex
    assert call["endpoint"] == "chat.completions" and call["status"] == "completed"
    assert call["request_id"] == answer.headers["x-request-id"]
    assert call["api_key_id"] == t.api_key_id and call["user_id"] == t.user_id
    assert (call["prompt_tokens"], call["completion_tokens"]) == (
        completion.usage.prompt_tokens, completion.usage.completion_tokens)
    record = await one(db, "SELECT * FROM usage_records WHERE tenant_id = %s", t.tenant_id)
    assert record["llm_call_id"] == call["id"] and record["api_key_id"] == t.api_key_id
    daily = await rows(
        db, "SELECT dimension, sum(prompt_tokens + completion_tokens) AS tokens"
        " FROM usage_daily WHERE tenant_id = %s AND dimension IN ('api_key', 'model')"
        " GROUP BY dimension", t.tenant_id)
    assert {r["dimension"]: r["tokens"] for r in daily} == {
        "api_key": completion.usage.total_tokens, "model": completion.usage.total_tokens}
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_plain_and_streamed_cost_the_same(
    db: Database, settings: Settings, url: str, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    client = sdk(url, t.api_key)
    plain = client.chat.completions.create(model="up/gpt-4o-mini", messages=ASK, max_tokens=50)
    chunks = list(client.chat.completions.create(
        model="up/gpt-4o-mini", messages=ASK, max_tokens=50, stream=True,
        stream_options={"include_usage": True},
    ))
    assert fresh.requests[-1]["body"]["stream_options"] == {"include_usage": True}
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == plain.usage.total_tokens
    calls = await rows(
        db, "SELECT stream, cost_usd, total_tokens, tokens_estimated, stream_chunks,"
        " chunk_gap_p50_ms, chunk_gap_p99_ms, ttft_ms FROM llm_calls"
        " WHERE tenant_id = %s ORDER BY created_at", t.tenant_id)
    assert [c["stream"] for c in calls] == [False, True]
    assert calls[0]["stream_chunks"] is None
    assert calls[1]["stream_chunks"] == -(-len(text) // 7)  # the vendor sends 7 characters
    assert 0 <= calls[1]["chunk_gap_p50_ms"] <= calls[1]["chunk_gap_p99_ms"]
    assert calls[1]["ttft_ms"] is not None
    assert calls[0]["cost_usd"] == calls[1]["cost_usd"] > Decimal(0)
    assert calls[0]["total_tokens"] == calls[1]["total_tokens"]
    assert not any(c["tokens_estimated"] for c in calls)
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_the_stream_on_the_wire(db: Database, settings: Settings, url: str, fresh) -> None:
    t = await with_vendor(db, settings, fresh)
    lines = raw_stream(url, t.api_key, {"model": "up/gpt-4o-mini", "messages": ASK,
                                        "stream": True})
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)  # not asked for: not sent
    # asked for by the gateway all the same, so the call is priced from the vendor's count
    assert fresh.requests[-1]["body"]["stream_options"] == {"include_usage": True}


async def test_tool_round_trip_plain_and_streamed(
    db: Database, settings: Settings, url: str, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    client = sdk(url, t.api_key)
    first = client.chat.completions.create(model="up/gpt-4o-mini", messages=ASK, tools=TOOLS)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "search" and json.loads(call.function.arguments) == {
        "q": "weather in Oslo"}
    streamed = list(client.chat.completions.create(
        model="up/gpt-4o-mini", messages=ASK, tools=TOOLS, stream=True))
    pieces = [tc for c in streamed if c.choices for tc in c.choices[0].delta.tool_calls or []]
    assert pieces[0].id == call.id and pieces[0].function.name == "search"
    assert "".join(p.function.arguments for p in pieces) == call.function.arguments
    assert streamed[-1].choices[0].finish_reason == "tool_calls"
    messages = [*ASK, first.choices[0].message.model_dump(exclude_none=True),
                {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}]
    second = client.chat.completions.create(model="up/gpt-4o-mini", messages=messages,
                                            tools=TOOLS)
    assert "Sunny, 21 C" in second.choices[0].message.content
    sent = fresh.requests[-1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 C"}
    assert sent[-2]["tool_calls"][0]["id"] == call.id


async def test_parameters_are_passed_on(db: Database, settings: Settings, url: str, fresh) -> None:
    t = await with_vendor(db, settings, fresh)
    fmt = {"type": "json_schema", "json_schema": {
        "name": "city", "schema": {"type": "object", "properties": {"name": {"type": "string"}}},
        "strict": True}}
    sdk(url, t.api_key).chat.completions.create(
        model="up/gpt-4o-mini", messages=ASK, response_format=fmt, seed=7, top_p=0.5,
        user="app-user-1", max_completion_tokens=40, stop=["\n\n"], temperature=0.2,
        extra_body={"top_k": 5},
    )
    body = fresh.requests[-1]["body"]
    assert body["response_format"] == fmt
    assert (body["seed"], body["top_p"], body["user"], body["top_k"]) == (7, 0.5, "app-user-1", 5)
    assert body["max_completion_tokens"] == 40 and "max_tokens" not in body
    assert (body["stop"], body["temperature"], body["model"]) == (["\n\n"], 0.2, "gpt-4o-mini")


async def test_bare_model_names_and_models_list(
    db: Database, settings: Settings, url: str, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    client = sdk(url, t.api_key)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=ASK).model == (
        "gpt-4o-mini")
    assert fresh.requests[-1]["body"]["model"] == "gpt-4o-mini"
    ids = {m.id for m in client.models.list()}
    assert {"up/gpt-4o-mini", "offline/offline-1"} <= ids
    assert client.models.retrieve("up/gpt-4o-mini").owned_by == "up"
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("nope/never")
    assert info.value.code == "model_not_found"


async def test_async_client_plain_and_streamed(db: Database, url: str) -> None:
    t = await gateway_tenant(db)
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=t.api_key) as client:
        plain = await client.chat.completions.create(model="offline", messages=ASK)
        stream = await client.chat.completions.create(model="offline", messages=ASK,
                                                      stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == plain.choices[0].message.content
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_embeddings(db: Database, settings: Settings, url: str, fresh) -> None:
    t = await with_vendor(db, settings, fresh)
    client = sdk(url, t.api_key)
    one_text = client.embeddings.create(model="up/text-embedding-3-small", input="hello")
    assert len(one_text.data) == 1 and len(one_text.data[0].embedding) == 8
    many = client.embeddings.create(model="up/text-embedding-3-small", input=["a b", "c"],
                                    dimensions=4, encoding_format="float")
    assert [len(d.embedding) for d in many.data] == [4, 4] and many.usage.prompt_tokens == 3
    assert fresh.requests[-1]["body"]["dimensions"] == 4
    offline = client.embeddings.create(model="offline", input=["the cat", "the cat sat"])
    assert len(offline.data[0].embedding) == 256
    calls = await rows(db, "SELECT endpoint, prompt_tokens, completion_tokens FROM llm_calls"
                       " WHERE tenant_id = %s ORDER BY created_at", t.tenant_id)
    assert [c["endpoint"] for c in calls] == ["embeddings"] * 3
    assert calls[1]["prompt_tokens"] == 3 and calls[1]["completion_tokens"] == 0
    assert await settled(db, t.tenant_id) == NO_HOLD


# -- errors -----------------------------------------------------------------------------------


async def test_each_error_class(db: Database, settings: Settings, url: str) -> None:
    t = await gateway_tenant(db)
    with pytest.raises(openai.AuthenticationError) as auth:
        sdk(url, "ap_not-a-key", max_retries=0).chat.completions.create(
            model="offline", messages=ASK)
    assert auth.value.body["type"] == "invalid_request_error"
    reader = await gateway_tenant(db, scopes=["llm:read"])
    with pytest.raises(openai.PermissionDeniedError) as denied:
        sdk(url, reader.api_key).chat.completions.create(model="offline", messages=ASK)
    assert "llm:invoke" in denied.value.message
    with pytest.raises(openai.NotFoundError) as missing:
        sdk(url, t.api_key).chat.completions.create(model="nowhere/gpt-9", messages=ASK)
    assert missing.value.code == "model_not_found" and "nowhere/gpt-9" in missing.value.message
    assert missing.value.param == "model"
    assert await rows(db, "SELECT 1 FROM llm_calls WHERE tenant_id = %s", t.tenant_id) == []


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0]", "role"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id",
         "Field required"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": ASK, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "objekt"}}}]},
         "tools[0].function.parameters", "not a valid JSON Schema"),
        ({"messages": ASK, "n": 3}, "n", "less than or equal to 1"),
        ({"messages": ASK, "max_tokens": 10**7}, "max_tokens", "less than or equal"),
        ({"messages": ASK, "max_tokens": 40000}, "max_tokens", "context window"),
        ({"messages": ASK, "tool_choice": {"type": "function", "function": {"name": "g"}}},
         None, "not among tools"),
        ({"messages": ASK, "temperature": 3}, "temperature", "less than or equal to 2"),
    ],
)
async def test_bad_input_is_a_400_that_records_nothing(
    db: Database, url: str, body, param, says
) -> None:
    t = await gateway_tenant(db)
    with pytest.raises(openai.BadRequestError) as info:
        sdk(url, t.api_key).chat.completions.create(model="offline", **body)
    assert says in info.value.message
    if param:
        assert info.value.param == param
    assert await rows(db, "SELECT 1 FROM llm_calls WHERE tenant_id = %s", t.tenant_id) == []
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_malformed_json_and_a_huge_body(db: Database, url: str) -> None:
    t = await gateway_tenant(db)
    auth = {"Authorization": f"Bearer {t.api_key}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as http:
        r = await http.post("/v1/chat/completions", content=b"{nope")
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        big = json.dumps({"model": "offline", "messages": [
            {"role": "user", "content": "x" * (20 * 1024 * 1024)}]})
        r = await http.post("/v1/chat/completions", content=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    with pytest.raises(openai.APIStatusError) as info:
        sdk(url, t.api_key).chat.completions.create(
            model="offline", messages=[{"role": "user", "content": "x" * (20 * 1024 * 1024)}])
    assert info.value.status_code == 413
    assert await rows(db, "SELECT 1 FROM llm_calls WHERE tenant_id = %s", t.tenant_id) == []


async def test_a_budget_refusal_is_not_retried(db: Database, url: str) -> None:
    t = await gateway_tenant(db, token_limit=50)
    sent: list[str] = []
    client = sdk(url, t.api_key, http_client=openai.DefaultHttpxClient(
        event_hooks={"request": [lambda r: sent.append(str(r.url))]}))
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="offline", messages=ASK, max_tokens=100)
    assert info.value.code == "insufficient_quota" and "tenant" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"
    assert len(sent) == 1
    assert await rows(db, "SELECT 1 FROM llm_calls WHERE tenant_id = %s", t.tenant_id) == []
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_a_rate_limit_says_when_to_retry(db: Database) -> None:
    from agentplane.auth import keys as auth_keys
    from agentplane.auth.models import ApiKeyIn

    t = await gateway_tenant(db)
    _, key = await auth_keys.create_key(
        db, t.tenant_id,
        ApiKeyIn(name="slow", scopes=["llm:invoke"], rate_limit_per_hour=1, user_id=t.user_id),
        actor=None,
    )
    from agentplane.app import create_app

    transport = httpx.ASGITransport(app=create_app(db.settings, db=db))
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        auth = {"Authorization": f"Bearer {key}"}
        body = {"model": "offline", "messages": ASK}
        assert (await c.post("/v1/chat/completions", json=body, headers=auth)).status_code == 200
        r = await c.post("/v1/chat/completions", json=body, headers=auth)
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    assert "x-should-retry" not in r.headers


async def test_sessions_by_id_external_id_and_of_another_tenant(db: Database, url: str) -> None:
    t = await gateway_tenant(db)
    other = await gateway_tenant(db)
    theirs = await session(db, other, 10_000)
    mine = await session(db, t, 100_000, external_id="conv-1")
    client = sdk(url, t.api_key)
    for ref in (str(mine), "conv-1"):
        client.chat.completions.create(model="offline", messages=ASK,
                                       extra_headers={"x-agentplane-session": ref})
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="offline", messages=ASK,
                                       extra_headers={"x-agentplane-session": str(theirs)})
    assert info.value.code == "session_not_found"
    calls = await rows(db, "SELECT session_id, total_tokens FROM llm_calls WHERE tenant_id = %s",
                       t.tenant_id)
    assert [c["session_id"] for c in calls] == [mine, mine]
    used = await one(db, "SELECT tokens_used FROM sessions WHERE id = %s", mine)
    assert used["tokens_used"] == sum(c["total_tokens"] for c in calls)
    small = await session(db, t, 20)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="offline", messages=ASK,
                                       extra_headers={"x-agentplane-session": str(small)})
    assert refused.value.code == "insufficient_quota" and "session" in refused.value.message
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_client_leaving_mid_stream_pays_what_was_generated(
    db: Database, settings: Settings, url: str, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    fresh.chunk_delay = 0.2
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", timeout=30,
        json={"model": "up/gpt-4o-mini", "messages": ASK, "stream": True, "max_tokens": 64},
        headers={"Authorization": f"Bearer {t.api_key}"},
    ) as r:
        for line in r.iter_lines():
            if '"content":"Echo' in line.replace(" ", ""):
                break
    held = await settled(db, t.tenant_id)
    call = await one(db, "SELECT * FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert held == NO_HOLD
    assert call["status"] == "cancelled" and call["tokens_estimated"]
    assert 0 < call["completion_tokens"] < 20 and call["response_content"].startswith("Echo")
    record = await one(db, "SELECT * FROM usage_records WHERE tenant_id = %s", t.tenant_id)
    assert record["completion_tokens"] == call["completion_tokens"]
    tenant = await one(db, "SELECT monthly_token_usage FROM tenants WHERE id = %s", t.tenant_id)
    assert tenant["monthly_token_usage"] == call["total_tokens"]


async def test_a_vendor_failing_mid_stream(
    db: Database, settings: Settings, url: str, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    fresh.drop_after = 3
    client = sdk(url, t.api_key)
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        list(client.chat.completions.create(model="up/gpt-4o-mini", messages=ASK, stream=True))
    call = await one(db, "SELECT status, completion_tokens FROM llm_calls WHERE tenant_id = %s",
                     t.tenant_id)
    assert call["status"] == "failed" and call["completion_tokens"] > 0
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_vendor_errors_map_to_sdk_classes(
    db: Database, settings: Settings, url: str, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    client = sdk(url, t.api_key, max_retries=0)
    fresh.queue.append((400, {}, {"error": {"message": "This model's maximum context length "
                                            "is 8 tokens", "code": "context_length_exceeded"}}))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="up/gpt-4o-mini", messages=ASK)
    assert "maximum context length" in info.value.message
    fresh.queue.extend([(503, {}, {"error": {"message": "overloaded"}})] * 3)
    with pytest.raises(openai.InternalServerError) as down:
        client.chat.completions.create(model="up/gpt-4o-mini", messages=ASK)
    assert down.value.status_code == 502
    calls = await rows(db, "SELECT status FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert [c["status"] for c in calls] == ["failed", "failed"]
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_other_routes_keep_problem_json(db: Database, url: str) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer ap_nope"}) as c:
        r = await c.get("/v1/runs")
        assert r.status_code == 401
        assert r.headers["content-type"] == "application/problem+json"
        r = await c.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"


async def test_keep_alive_comments_while_the_vendor_is_silent(
    db: Database, settings: Settings, endpoints, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    fresh.chunk_delay = 0.25
    quick = settings.model_copy(update={"events_keepalive_seconds": 0.1})
    with live_server(quick, endpoints) as other:
        lines = raw_stream(other, t.api_key, {"model": "up/gpt-4o-mini", "messages": ASK,
                                              "stream": True, "max_tokens": 64})
    assert ": keep-alive" in lines and lines[-1] == "data: [DONE]"
    text = "".join(json.loads(x[6:])["choices"][0]["delta"].get("content") or ""
                   for x in lines if x.startswith("data: {"))
    assert text.startswith("Echo from the vendor")


async def test_a_tenant_may_keep_no_content(db: Database, url: str) -> None:
    t = await gateway_tenant(db)
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE tenants SET settings = settings || '{\"llm_content\": \"drop\"}'"
                           " WHERE id = %s", [t.tenant_id])
    answer = sdk(url, t.api_key).chat.completions.create(model="offline", messages=ASK)
    call = await one(db, "SELECT request, response_content, tool_calls, total_tokens, cost_usd"
                     " FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert call["request"]["messages"] is None and call["response_content"] is None
    assert call["total_tokens"] == answer.usage.total_tokens > 0
    assert call["cost_usd"] == 0  # the offline model's price: counted all the same


async def test_a_vendor_429_is_retried_after_its_retry_after(
    db: Database, settings: Settings, url: str, fresh
) -> None:
    t = await with_vendor(db, settings, fresh)
    fresh.queue.append((429, {"Retry-After": "0.3"}, {"error": {"message": "slow down"}}))
    before = len(fresh.requests)
    client = sdk(url, t.api_key, max_retries=0)
    raw = client.chat.completions.with_raw_response.create(model="up/gpt-4o-mini", messages=ASK)
    assert raw.parse().choices[0].message.content.startswith("Echo from the vendor")
    assert len(fresh.requests) - before == 2
    # The wait was the vendor's, not agentplane's own time.
    assert float(raw.headers["x-agentplane-overhead-ms"]) < 300
    calls = await rows(db, "SELECT status FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert [c["status"] for c in calls] == ["completed"]
