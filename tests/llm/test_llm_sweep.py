"""The sweep of expired budget reservations runs on its own: in the background of a process
making calls, and before a refusal is final. Each test has a process-like Database of
its own, since the sweep's schedule is per process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID

import pytest

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext
from agentplane.llm.sweep import REFUSAL_GAP_S
from agentplane.usage.budgets import Budgets
from tests.llm.helpers import MESSAGES, row, session, tenant


@pytest.fixture
async def process(settings: Settings, endpoints: ep.Endpoints) -> AsyncIterator[Database]:
    db = Database(settings.model_copy(update={"pool_min_size": 0}), endpoints)
    await db.open()
    yield db
    await db.close()


async def dead_caller(db: Database, settings: Settings, tenant_id: UUID, sid: UUID) -> UUID:
    """A reservation whose caller died: reserved, never settled, now past its expiry."""
    budgets = Budgets(db, settings)
    reservation = await budgets.reserve(tenant_id, 600, session_id=sid, api_key_id=None)
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE budget_reservations SET expires_at = now() - interval '1 second' WHERE id = %s",
            [reservation.id],
        )
    return reservation.id


async def test_a_process_making_calls_sweeps_expired_reservations_in_the_background(
    db: Database, process: Database, settings: Settings
) -> None:
    t = await tenant(db)
    sid = await session(db, t.tenant_id, budget=100_000)
    dead = await dead_caller(db, settings, t.tenant_id, sid)
    other = await session(db, t.tenant_id, budget=100_000)
    # A call of another session, nowhere near a refusal: the sweep still runs.
    await LLM(process, settings).complete(
        CallContext(tenant_id=t.tenant_id, session_id=other),
        ChatRequest(messages=MESSAGES, max_tokens=8),
    )
    for _ in range(100):
        gone = await row(
            db, "SELECT count(*) = 0 AS gone FROM budget_reservations WHERE id = %s", dead
        )
        if gone["gone"]:
            break
        await asyncio.sleep(0.05)
    assert gone["gone"], "the expired reservation was not swept"
    s = await row(db, "SELECT tokens_reserved, tokens_used FROM sessions WHERE id = %s", sid)
    assert s == {"tokens_reserved": 0, "tokens_used": 0}


async def test_a_dead_callers_reservation_does_not_refuse_a_call(
    db: Database, process: Database, settings: Settings
) -> None:
    t = await tenant(db)
    llm = LLM(process, settings)
    warm = await session(db, t.tenant_id, budget=100_000)
    ctx = CallContext(tenant_id=t.tenant_id, session_id=warm)
    await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=8))  # first sweep
    await asyncio.sleep(REFUSAL_GAP_S + 0.2)
    sid = await session(db, t.tenant_id, budget=1000)
    await dead_caller(db, settings, t.tenant_id, sid)
    # 600 of 1000 held by the dead caller; this call needs up to ~510 more: admitted
    # only because the refusal sweeps first (the background sweep is not due for minutes).
    out = await llm.complete(
        CallContext(tenant_id=t.tenant_id, session_id=sid),
        ChatRequest(messages=MESSAGES, max_tokens=500),
    )
    used = out.result.prompt_tokens + out.result.completion_tokens
    s = await row(db, "SELECT tokens_reserved, tokens_used FROM sessions WHERE id = %s", sid)
    assert s == {"tokens_reserved": 0, "tokens_used": used}
    assert used <= 1000
