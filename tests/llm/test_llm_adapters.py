"""The OpenAI-compatible and Anthropic adapters against local servers speaking each
protocol, and the offline provider. No adapter is patched."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import pytest

from agentplane.llm.adapters import AdapterConfig, adapter_for
from agentplane.llm.adapters.base import ChatRequest, ChatResult, TextDelta
from agentplane.llm.errors import ProviderError, ProviderTimeout
from agentplane.llm.tokens import estimate_prompt
from tests.llm.vendors import KEY, LOCAL, AnthropicHandler, OpenAIHandler, Vendor, serve

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
            },
        },
    }
]
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of Norway?"},
]


@pytest.fixture(params=["openai_compatible", "anthropic"])
def vendor(request: pytest.FixtureRequest) -> Iterator[tuple[str, Vendor]]:
    handler = OpenAIHandler if request.param == "openai_compatible" else AnthropicHandler
    with serve(handler) as server:
        yield request.param, server


def adapter(kind: str, server: Vendor, **kw):
    base = server.url + ("/v1" if kind == "openai_compatible" else "")
    config = AdapterConfig(
        type=kind, name="v", base_url=base, api_key=KEY, model="m-1", backoff=0.01,
        guard=LOCAL, **kw
    )
    return adapter_for(config)


async def collect(agen) -> tuple[list[str], ChatResult]:
    deltas, final = [], None
    async for item in agen:
        if isinstance(item, TextDelta):
            deltas.append(item.text)
        else:
            final = item
    assert final is not None
    return deltas, final


async def test_complete_returns_content_usage_and_finish(vendor) -> None:
    kind, server = vendor
    result = await adapter(kind, server).complete(ChatRequest(messages=MESSAGES, max_tokens=50))
    assert (
        result.content
        == "Echo from the vendor: What is the capital of Norway? (and a few more words to stream)"
    )
    assert result.finish_reason == "stop"
    assert result.prompt_tokens > 0 and result.completion_tokens == len(result.content.split())
    assert result.model == "m-1"
    sent = server.requests[-1]
    if kind == "anthropic":
        assert sent["body"]["system"] == "You are terse."
        assert sent["headers"]["anthropic-version"]
        assert all(m["role"] != "system" for m in sent["body"]["messages"])
    else:
        assert sent["body"]["messages"][0]["role"] == "system"


async def test_stream_matches_non_streaming(vendor) -> None:
    kind, server = vendor
    a = adapter(kind, server)
    plain = await a.complete(ChatRequest(messages=MESSAGES, max_tokens=50))
    deltas, streamed = await collect(a.stream(ChatRequest(messages=MESSAGES, max_tokens=50)))
    assert len(deltas) > 3, "the answer arrives in pieces"
    assert "".join(deltas) == streamed.content == plain.content
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        plain.prompt_tokens,
        plain.completion_tokens,
    )
    assert streamed.finish_reason == plain.finish_reason == "stop"
    assert streamed.ttft_ms is not None
    assert server.requests[-1]["body"]["stream"] is True


async def test_tool_calls_streaming_and_not(vendor) -> None:
    kind, server = vendor
    a = adapter(kind, server)
    request = ChatRequest(messages=MESSAGES, tools=TOOLS, max_tokens=50)
    plain = await a.complete(request)
    _, streamed = await collect(a.stream(request))
    for result in (plain, streamed):
        assert result.finish_reason == "tool_calls"
        assert [(c.name, c.arguments) for c in result.tool_calls] == [
            ("get_weather", {"q": "weather in Oslo"})
        ]
    assert plain.completion_tokens == streamed.completion_tokens
    if kind == "anthropic":
        assert server.requests[-1]["body"]["tools"][0]["input_schema"]["required"] == ["q"]


async def test_tool_result_round_trip(vendor) -> None:
    kind, server = vendor
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"q": "Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    ]
    result = await adapter(kind, server).complete(
        ChatRequest(messages=messages, tools=TOOLS, max_tokens=50)
    )
    assert result.finish_reason == "stop" and "sunny" in result.content
    if kind == "anthropic":
        sent = server.requests[-1]["body"]["messages"]
        assert sent[1]["content"][0] == {
            "type": "tool_use",
            "id": "call_1",
            "name": "get_weather",
            "input": {"q": "Oslo"},
        }
        assert sent[2]["content"][0]["type"] == "tool_result"


async def test_broken_tool_arguments_from_a_model_are_sent_back_not_a_crash() -> None:
    # Models do emit broken JSON; the conversation replays it on the next turn.
    broken = '{"q": "Oslo'
    messages = [
        *MESSAGES,
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": broken}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "bad arguments"},
    ]
    with serve(AnthropicHandler) as server:
        result = await adapter("anthropic", server).complete(
            ChatRequest(messages=messages, tools=TOOLS, max_tokens=50)
        )
        sent = server.requests[-1]["body"]["messages"]
    assert sent[1]["content"][0]["input"] == {"_raw": broken}
    assert "bad arguments" in result.content


async def test_cached_tokens_are_reported(vendor) -> None:
    kind, server = vendor
    server.cached_tokens = 3
    result = await adapter(kind, server).complete(ChatRequest(messages=MESSAGES, max_tokens=50))
    assert result.cached_tokens == 3
    assert result.prompt_tokens > 3


async def test_retries_429_honouring_retry_after(vendor) -> None:
    kind, server = vendor
    server.queue = [
        (429, {"Retry-After": "0.3"}, {"error": {"message": "slow down"}}),
        (503, {}, {"error": {"message": "overloaded"}}),
    ]
    t0 = time.perf_counter()
    result = await adapter(kind, server, max_retries=2).complete(ChatRequest(messages=MESSAGES))
    assert result.content.startswith("Echo")
    assert len(server.requests) == 3
    assert time.perf_counter() - t0 >= 0.3, "Retry-After was honoured"


async def test_gives_up_after_max_retries_with_clear_error(vendor) -> None:
    kind, server = vendor
    server.queue = [(500, {}, {"error": {"message": "boom"}})] * 3
    with pytest.raises(ProviderError) as info:
        await adapter(kind, server, max_retries=1).complete(ChatRequest(messages=MESSAGES))
    assert len(server.requests) == 2
    assert info.value.status == 502
    assert "answered 500: boom" in info.value.detail
    assert info.value.extra["upstream_status"] == 500


async def test_client_errors_are_not_retried(vendor) -> None:
    kind, server = vendor
    server.queue = [(400, {}, {"error": {"message": "bad model"}})]
    with pytest.raises(ProviderError, match="answered 400: bad model"):
        await adapter(kind, server).complete(ChatRequest(messages=MESSAGES))
    assert len(server.requests) == 1


async def test_wrong_key_error_never_contains_the_key(vendor) -> None:
    kind, server = vendor
    wrong = "sk-wrong-key-99887766554433221100"
    base = server.url + ("/v1" if kind == "openai_compatible" else "")
    a = adapter_for(AdapterConfig(type=kind, name="v", base_url=base, api_key=wrong, model="m",
                                   guard=LOCAL))
    with pytest.raises(ProviderError) as info:
        await a.complete(ChatRequest(messages=MESSAGES))
    assert info.value.extra["upstream_status"] == 401
    assert "answered 401" in info.value.detail
    text = info.value.detail + repr(info.value.problem()) + repr(a.config)
    for fragment in (wrong, wrong[:8], wrong[-4:]):
        assert fragment not in text


async def test_timeout_is_a_provider_timeout(vendor) -> None:
    kind, server = vendor
    server.delay = 1.0
    with pytest.raises(ProviderTimeout) as info:
        await adapter(kind, server, timeout=0.2, max_retries=0).complete(
            ChatRequest(messages=MESSAGES)
        )
    assert info.value.status == 504


@pytest.mark.parametrize(
    ("raw", "stream", "message"),
    [
        (b"data: {not json\n\n", True, "sent a stream that is not"),
        (b'data: [1, 2]\n\nevent: x\ndata: "text"\n\n', True, "sent a stream that is not"),
        (b'{"answer": "not a stream"}', True, "sent no stream events|no message_start event"),
        (b"<html>gateway</html>", False, "sent an answer that is not"),
    ],
)
async def test_unreadable_answers_are_provider_errors(vendor, raw, stream, message) -> None:
    kind, server = vendor
    server.raw = raw
    a = adapter(kind, server, max_retries=0)
    with pytest.raises(ProviderError, match=message) as info:
        if stream:
            await collect(a.stream(ChatRequest(messages=MESSAGES)))
        else:
            await a.complete(ChatRequest(messages=MESSAGES))
    assert info.value.status == 502 and KEY not in info.value.detail


@pytest.mark.parametrize("stream", [False, True])
async def test_an_answer_that_stalls_midway_is_a_provider_timeout(vendor, stream) -> None:
    kind, server = vendor
    server.raw, server.stall = b'data: {"choices": []}\n\n' if stream else b'{"id": ', 1.0
    a = adapter(kind, server, timeout=0.3, max_retries=0)
    with pytest.raises(ProviderTimeout, match=r"stopped answering for 0\.3s") as info:
        if stream:
            await collect(a.stream(ChatRequest(messages=MESSAGES)))
        else:
            await a.complete(ChatRequest(messages=MESSAGES))
    assert info.value.status == 504


async def test_unreachable_provider() -> None:
    a = adapter_for(
        AdapterConfig(
            type="openai_compatible", name="gone", base_url="http://127.0.0.1:9/v1", max_retries=0,
            guard=LOCAL,
        )
    )
    with pytest.raises(ProviderError, match="cannot reach provider gone"):
        await a.complete(ChatRequest(messages=MESSAGES))


async def test_openai_provider_reported_cost_is_kept() -> None:
    with serve(OpenAIHandler) as server:
        server.cost = 0.00042
        result = await adapter("openai_compatible", server).complete(ChatRequest(messages=MESSAGES))
    assert result.cost == Decimal("0.00042")


# -- offline -----------------------------------------------------------------------------

OFFLINE = AdapterConfig(type="offline", name="offline", model="offline-1")


async def test_offline_is_deterministic_and_counts_like_the_estimator() -> None:
    a = adapter_for(OFFLINE)
    one = await a.complete(ChatRequest(messages=MESSAGES))
    two = await a.complete(ChatRequest(messages=MESSAGES))
    other = await a.complete(ChatRequest(messages=[{"role": "user", "content": "Something else"}]))
    assert one.content == two.content != other.content
    assert "capital of Norway" in one.content
    assert one.prompt_tokens == estimate_prompt(MESSAGES)
    assert one.finish_reason == "stop" and one.completion_tokens > 10


async def test_offline_stops_at_max_tokens() -> None:
    result = await adapter_for(OFFLINE).complete(ChatRequest(messages=MESSAGES, max_tokens=5))
    assert result.completion_tokens == 5
    assert result.finish_reason == "length"


async def test_offline_offers_tool_calls_and_uses_results() -> None:
    a = adapter_for(OFFLINE)
    call = await a.complete(ChatRequest(messages=MESSAGES, tools=TOOLS))
    assert call.finish_reason == "tool_calls"
    assert call.tool_calls[0].name == "get_weather"
    assert set(call.tool_calls[0].arguments) == {"q"}
    after = await a.complete(
        ChatRequest(messages=[*MESSAGES, {"role": "tool", "content": "sunny"}], tools=TOOLS)
    )
    assert after.finish_reason == "stop" and "sunny" in after.content
    none = await a.complete(ChatRequest(messages=MESSAGES, tools=TOOLS, tool_choice="none"))
    assert not none.tool_calls


async def test_offline_json_when_asked() -> None:
    import json

    msgs = [{"role": "system", "content": "Reply in JSON."}, {"role": "user", "content": "hi"}]
    result = await adapter_for(OFFLINE).complete(ChatRequest(messages=msgs))
    assert set(json.loads(result.content)) == {"answer", "confidence"}


async def test_offline_stream_matches_complete() -> None:
    a = adapter_for(OFFLINE)
    plain = await a.complete(ChatRequest(messages=MESSAGES))
    deltas, streamed = await collect(a.stream(ChatRequest(messages=MESSAGES)))
    assert "".join(deltas) == plain.content == streamed.content
    assert streamed.completion_tokens == plain.completion_tokens
