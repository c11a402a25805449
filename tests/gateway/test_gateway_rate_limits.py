"""Per-key rate limits (llm_rpm, llm_tpm) through the openai SDK: a call over a limit is a
RateLimitError with retry-after, nothing is recorded for it and nothing stays held."""

from __future__ import annotations

import asyncio
import time

import openai
import pytest

from agentplane.auth import keys as auth_keys
from agentplane.auth.models import ApiKeyIn
from agentplane.db.pool import Database
from tests.gateway.helpers import NO_HOLD, gateway_tenant, rows, settled

ASK = [{"role": "user", "content": "Hello?"}]


async def limited_key(db: Database, **limits: int) -> tuple[object, str]:
    t = await gateway_tenant(db)
    row, key = await auth_keys.create_key(
        db, t.tenant_id,
        ApiKeyIn(name="limited", scopes=["llm:invoke"], rate_limit_per_hour=1_000_000,
                 user_id=t.user_id, **limits),
        actor=None,
    )
    assert (row["llm_rpm"], row["llm_tpm"]) == (limits.get("llm_rpm"), limits.get("llm_tpm"))
    return t, key


async def same_minute() -> None:
    """Start well inside a minute: the test's calls must share one window."""
    if time.time() % 60 > 45:
        await asyncio.sleep(61 - time.time() % 60)


async def test_requests_per_minute(db: Database, url: str) -> None:
    t, key = await limited_key(db, llm_rpm=2)
    await same_minute()
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as sdk:
        for _ in range(2):
            sdk.chat.completions.create(model="offline", messages=ASK, max_tokens=16)
        with pytest.raises(openai.RateLimitError) as info:
            sdk.chat.completions.create(model="offline", messages=ASK, max_tokens=16)
    error = info.value.response.json()["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "2 requests per minute" in error["message"]
    assert 1 <= int(info.value.response.headers["retry-after"]) <= 60
    calls = await rows(db, "SELECT status FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert [c["status"] for c in calls] == ["completed", "completed"]
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_tokens_per_minute(db: Database, url: str) -> None:
    t, key = await limited_key(db, llm_tpm=300)
    await same_minute()
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as sdk:
        sdk.chat.completions.create(model="offline", messages=ASK, max_tokens=200)
        with pytest.raises(openai.RateLimitError) as info:
            sdk.chat.completions.create(model="offline", messages=ASK, max_tokens=200)
        assert "tokens per minute" in info.value.response.json()["error"]["message"]
        assert info.value.response.headers["retry-after"]
        # A call whose worst case alone is over the limit could never pass: a 400.
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(model="offline", messages=ASK, max_tokens=400)
        # What is left of the minute still admits a smaller call.
        sdk.chat.completions.create(model="offline", messages=ASK, max_tokens=20)
    calls = await rows(db, "SELECT status FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert len(calls) == 2
    assert await settled(db, t.tenant_id) == NO_HOLD


async def test_limits_hold_across_concurrent_calls(db: Database, url: str) -> None:
    """The count is PostgreSQL's: concurrent calls (batched reservations) never pass it."""
    t, key = await limited_key(db, llm_rpm=5)
    await same_minute()
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as sdk:
        results = await asyncio.gather(
            *(sdk.chat.completions.create(model="offline", messages=ASK, max_tokens=8)
              for _ in range(20)),
            return_exceptions=True,
        )
    refused = [r for r in results if isinstance(r, BaseException)]
    assert len(refused) == 15 and all(isinstance(r, openai.RateLimitError) for r in refused)
    calls = await rows(db, "SELECT 1 FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert len(calls) == 5
    assert await settled(db, t.tenant_id) == NO_HOLD
