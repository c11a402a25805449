"""The official anthropic SDK against the gateway's /v1/messages (x-api-key), plain and
streamed, over an Anthropic-protocol vendor, an OpenAI-protocol one and offline."""

from __future__ import annotations

import anthropic
import pytest

from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.gateway.helpers import NO_HOLD, add_provider, gateway_tenant, one, settled
from tests.llm.vendors import KEY, AnthropicHandler, OpenAIHandler, serve

ASK = [{"role": "user", "content": "What is the capital of Norway?"}]
TOOLS = [{"name": "search", "description": "Search the web",
          "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]


@pytest.fixture(scope="module")
def vendors():
    with serve(AnthropicHandler) as claude, serve(OpenAIHandler) as gpt:
        yield claude, gpt


_open: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open:
        _open.pop().close()


def sdk(url: str, key: str, **kw) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=url, api_key=key, **kw)
    _open.append(client)
    return client


async def with_vendors(db: Database, settings: Settings, vendors, **kw):
    claude, gpt = vendors
    t = await gateway_tenant(db, **kw)
    await add_provider(db, settings, t.tenant_id, name="claude", type="anthropic",
                       base_url=claude.url, api_key=KEY, model="claude-3-5-haiku-latest")
    await add_provider(db, settings, t.tenant_id, name="gpt", type="openai_compatible",
                       base_url=gpt.url + "/v1", api_key=KEY, model="gpt-4o-mini")
    return t


@pytest.mark.parametrize("model", ["claude/claude-3-5-haiku-latest", "gpt/gpt-4o-mini",
                                   "offline"])
async def test_plain_and_streamed(
    db: Database, settings: Settings, url: str, vendors, model: str
) -> None:
    t = await with_vendors(db, settings, vendors)
    client = sdk(url, t.api_key)
    plain = client.messages.create(model=model, max_tokens=64, messages=ASK,
                                   system="Be brief.")
    assert plain.type == "message" and plain.role == "assistant"
    assert plain.stop_reason == "end_turn" and plain.content[0].type == "text"
    with client.messages.stream(model=model, max_tokens=64, messages=ASK,
                                system="Be brief.") as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == plain.content[0].text == final.content[0].text
    assert final.usage.output_tokens == plain.usage.output_tokens
    assert final.usage.input_tokens == plain.usage.input_tokens
    calls = await one(db, "SELECT count(*) AS n, count(DISTINCT cost_usd) AS costs,"
                      " bool_and(endpoint = 'messages') AS messages FROM llm_calls"
                      " WHERE tenant_id = %s", t.tenant_id)
    assert calls["n"] == 2 and calls["messages"] and calls["costs"] <= 1
    assert await settled(db, t.tenant_id) == NO_HOLD


@pytest.mark.parametrize("model", ["claude/claude-3-5-haiku-latest", "gpt/gpt-4o-mini"])
async def test_tool_use_round_trip(
    db: Database, settings: Settings, url: str, vendors, model: str
) -> None:
    t = await with_vendors(db, settings, vendors)
    client = sdk(url, t.api_key)
    first = client.messages.create(model=model, max_tokens=64, messages=ASK, tools=TOOLS)
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.name == "search"
    assert use.input == {"q": "weather in Oslo"}
    with client.messages.stream(model=model, max_tokens=64, messages=ASK,
                                tools=TOOLS) as stream:
        streamed = stream.get_final_message()
    assert [b.input for b in streamed.content if b.type == "tool_use"] == [use.input]
    second = client.messages.create(model=model, max_tokens=64, tools=TOOLS, messages=[
        *ASK,
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny, 21 C"}]},
    ])
    assert "Sunny, 21 C" in second.content[0].text


async def test_errors(db: Database, url: str) -> None:
    t = await gateway_tenant(db, token_limit=40)
    with pytest.raises(anthropic.AuthenticationError):
        sdk(url, "ap_wrong", max_retries=0).messages.create(
            model="offline", max_tokens=8, messages=ASK)
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk(url, t.api_key).messages.create(model="no/such", max_tokens=8, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError):
        sdk(url, t.api_key).messages.create(model="offline", max_tokens=8, messages=[
            {"role": "wizard", "content": "hi"}])
    sent: list[str] = []
    client = sdk(url, t.api_key, http_client=anthropic.DefaultHttpxClient(
        event_hooks={"request": [lambda r: sent.append(str(r.url))]}))
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.create(model="offline", max_tokens=100, messages=ASK)
    assert refused.value.response.headers["x-should-retry"] == "false" and len(sent) == 1
    assert await settled(db, t.tenant_id) == NO_HOLD
