"""The official openai SDK's responses.create (plain and streamed, text and function
tools) against the gateway's /v1/responses."""

from __future__ import annotations

import json

import openai
import pytest

from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.gateway.helpers import NO_HOLD, add_provider, gateway_tenant, rows, settled
from tests.llm.vendors import KEY

TOOLS = [{"type": "function", "name": "search", "description": "Search the web",
          "parameters": {"type": "object", "properties": {"q": {"type": "string"}},
                         "required": ["q"]}}]


@pytest.fixture
def client(url):
    made: list[openai.OpenAI] = []

    def make(key: str) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=url + "/v1", api_key=key))
        return made[-1]

    yield make
    for c in made:
        c.close()


async def tenant_with_vendor(db: Database, settings: Settings, vendor):
    t = await gateway_tenant(db)
    await add_provider(db, settings, t.tenant_id, name="up", type="openai_compatible",
                       base_url=vendor.url + "/v1", api_key=KEY, model="gpt-4o-mini")
    return t


async def test_text_plain_and_streamed(db: Database, settings: Settings, vendor, client) -> None:
    t = await tenant_with_vendor(db, settings, vendor)
    api = client(t.api_key)
    plain = api.responses.create(model="up/gpt-4o-mini", input="What is the capital of Norway?",
                                 instructions="Be brief.", max_output_tokens=50)
    assert plain.object == "response" and plain.status == "completed"
    assert plain.output_text.startswith("Echo from the vendor: What is the capital")
    assert vendor.requests[-1]["body"]["messages"][0] == {"role": "system",
                                                          "content": "Be brief."}
    events = list(api.responses.create(model="up/gpt-4o-mini", stream=True,
                                       input="What is the capital of Norway?",
                                       instructions="Be brief.", max_output_tokens=50))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and "response.output_text.delta" in kinds
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == plain.output_text == events[-1].response.output_text
    assert events[-1].response.usage.total_tokens == plain.usage.total_tokens
    with api.responses.stream(model="up/gpt-4o-mini", input="What is the capital of Norway?",
                              instructions="Be brief.", max_output_tokens=50) as stream:
        final = stream.get_final_response()
    assert final.output_text == plain.output_text
    calls = await rows(db, "SELECT endpoint, stream FROM llm_calls WHERE tenant_id = %s"
                       " ORDER BY created_at", t.tenant_id)
    assert [(c["endpoint"], c["stream"]) for c in calls] == [
        ("responses", False), ("responses", True), ("responses", True)]
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_function_tools_round_trip(
    db: Database, settings: Settings, vendor, client
) -> None:
    t = await tenant_with_vendor(db, settings, vendor)
    api = client(t.api_key)
    first = api.responses.create(model="up/gpt-4o-mini", input="Weather in Oslo?", tools=TOOLS)
    call = next(i for i in first.output if i.type == "function_call")
    assert call.name == "search" and json.loads(call.arguments) == {"q": "weather in Oslo"}
    streamed = list(api.responses.create(model="up/gpt-4o-mini", input="Weather in Oslo?",
                                         tools=TOOLS, stream=True))
    done = [e for e in streamed if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == [call.arguments]
    second = api.responses.create(model="up/gpt-4o-mini", tools=TOOLS, input=[
        {"role": "user", "content": "Weather in Oslo?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name,
         "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny, 21 C"},
    ])
    assert "Sunny, 21 C" in second.output_text
    sent = vendor.requests[-1]["body"]["messages"]
    assert sent[-1] == {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny, 21 C"}


async def test_bad_input(db: Database, client) -> None:
    t = await gateway_tenant(db)
    api = client(t.api_key)
    with pytest.raises(openai.BadRequestError) as info:
        api.responses.create(model="offline", input="hi", previous_response_id="resp_1")
    assert info.value.param == "previous_response_id"
    with pytest.raises(openai.BadRequestError):
        api.responses.create(model="offline", input=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.NotFoundError):
        api.responses.create(model="nowhere/x", input="hi")
    assert await rows(db, "SELECT 1 FROM llm_calls WHERE tenant_id = %s", t.tenant_id) == []
