"""A healthy provider's configured fallback takes the calls it fails with a timeout, a
context-window or content-policy refusal, or a 429/503 that asked to retry later (after a
bounded wait); other errors are the client's. Upstreams are local fake vendors; the
client is the openai SDK."""

from __future__ import annotations

import time

import openai
import pytest

from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.gateway.helpers import NO_HOLD, add_provider, gateway_tenant, rows, settled
from tests.llm.vendors import KEY, OpenAIHandler, serve

ASK = [{"role": "user", "content": "Hello?"}]
CONTEXT = (400, {}, {"error": {"message": "This model's maximum context length is 8 tokens",
                               "type": "invalid_request_error",
                               "code": "context_length_exceeded"}})
POLICY = (400, {}, {"error": {"message": "Your request was rejected by our safety system",
                              "type": "invalid_request_error",
                              "code": "content_policy_violation"}})
PLAIN_400 = (400, {}, {"error": {"message": "Unrecognized request argument: frobnicate",
                                 "type": "invalid_request_error", "code": None}})


@pytest.fixture
def vendors():
    with serve(OpenAIHandler) as primary, serve(OpenAIHandler) as backup:
        yield primary, backup


async def tenant_with(db: Database, settings: Settings, primary, backup, **config):
    """A tenant whose provider `main` (at `primary`) falls back to `big` (at `backup`)."""
    t = await gateway_tenant(db)
    await add_provider(db, settings, t.tenant_id, name="big", type="openai_compatible",
                       base_url=backup.url + "/v1", api_key=KEY, model="big-window",
                       config={"max_retries": 0})
    await add_provider(db, settings, t.tenant_id, name="main", type="openai_compatible",
                       base_url=primary.url + "/v1", api_key=KEY, model="small-window",
                       config={"max_retries": 0, "fallback": "big", **config})
    return t


async def calls(db: Database, tenant_id) -> list[tuple[str, str]]:
    found = await rows(db, "SELECT provider, status FROM llm_calls WHERE tenant_id = %s "
                           "ORDER BY created_at", tenant_id)
    return [(c["provider"], c["status"]) for c in found]


def client(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0)


@pytest.mark.parametrize("failure", ["timeout", "context_window", "content_policy"])
async def test_the_fallback_takes_a_timeout_a_context_window_and_a_policy_refusal(
    db: Database, settings: Settings, url: str, vendors, failure: str
) -> None:
    primary, backup = vendors
    t = await tenant_with(db, settings, primary, backup, timeout=0.5)
    if failure == "timeout":
        primary.delay = 2.0
    else:
        primary.queue.append(CONTEXT if failure == "context_window" else POLICY)
    with client(url, t.api_key) as sdk:
        answer = sdk.chat.completions.create(model="main", messages=ASK)
    assert answer.choices[0].message.content.startswith("Echo from the vendor")
    assert len(primary.requests) == 1 and backup.requests[-1]["body"]["model"] == "big-window"
    assert await calls(db, t.tenant_id) == [("main", "failed"), ("big", "completed")]
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_a_streamed_call_falls_back_before_its_first_delta(
    db: Database, settings: Settings, url: str, vendors
) -> None:
    primary, backup = vendors
    t = await tenant_with(db, settings, primary, backup)
    primary.queue.append(CONTEXT)
    with client(url, t.api_key) as sdk:
        text = "".join(c.choices[0].delta.content or "" for c in sdk.chat.completions.create(
            model="main", messages=ASK, stream=True) if c.choices)
    assert text.startswith("Echo from the vendor") and len(backup.requests) == 1
    assert await calls(db, t.tenant_id) == [("main", "failed"), ("big", "completed")]
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_another_client_error_is_not_sent_to_the_fallback(
    db: Database, settings: Settings, url: str, vendors
) -> None:
    primary, backup = vendors
    t = await tenant_with(db, settings, primary, backup)
    primary.queue.append(PLAIN_400)
    with client(url, t.api_key) as sdk, pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="main", messages=ASK)
    assert "frobnicate" in info.value.message and backup.requests == []
    assert await calls(db, t.tenant_id) == [("main", "failed")]
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_a_429_with_retry_after_is_waited_for_then_falls_back(
    db: Database, settings: Settings, url: str, vendors
) -> None:
    primary, backup = vendors
    t = await tenant_with(db, settings, primary, backup, max_retries=1, backoff=0)
    slow_down = (429, {"Retry-After": "0.4"}, {"error": {"message": "slow down"}})
    primary.queue.extend([slow_down, slow_down])
    started = time.perf_counter()
    with client(url, t.api_key) as sdk:
        answer = sdk.chat.completions.create(model="main", messages=ASK)
    waited = time.perf_counter() - started
    assert answer.choices[0].message.content.startswith("Echo from the vendor")
    assert len(primary.requests) == 2 and len(backup.requests) == 1
    assert waited >= 0.4, "the vendor's Retry-After was honoured before falling back"
    assert await calls(db, t.tenant_id) == [("main", "failed"), ("big", "completed")]


async def test_a_retry_after_beyond_the_bound_falls_back_at_once(
    db: Database, settings: Settings, url: str, vendors
) -> None:
    primary, backup = vendors
    t = await tenant_with(db, settings, primary, backup, max_retries=3, max_retry_wait_s=2)
    primary.queue.append((503, {"Retry-After": "60"}, {"error": {"message": "overloaded"}}))
    started = time.perf_counter()
    with client(url, t.api_key) as sdk:
        answer = sdk.chat.completions.create(model="main", messages=ASK)
    assert time.perf_counter() - started < 2
    assert answer.choices[0].message.content.startswith("Echo from the vendor")
    assert len(primary.requests) == 1 and len(backup.requests) == 1


async def test_without_a_fallback_the_vendors_retry_after_reaches_the_client(
    db: Database, settings: Settings, url: str, vendors
) -> None:
    primary, _ = vendors
    t = await gateway_tenant(db)
    await add_provider(db, settings, t.tenant_id, name="alone", type="openai_compatible",
                       base_url=primary.url + "/v1", api_key=KEY, model="m",
                       config={"max_retries": 2, "max_retry_wait_s": 1})
    primary.queue.append((429, {"Retry-After": "30"}, {"error": {"message": "slow down"}}))
    with client(url, t.api_key) as sdk, pytest.raises(openai.RateLimitError) as info:
        sdk.chat.completions.create(model="alone", messages=ASK)
    assert info.value.response.headers["retry-after"] == "30"
    assert len(primary.requests) == 1
    assert await settled(db, t.tenant_id) == NO_HOLD
