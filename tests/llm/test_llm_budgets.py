"""Budgets enforced in PostgreSQL: atomic across tasks and processes, named when refused,
released on failure, fail-closed when they cannot be verified."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.errors import BudgetExceeded, Conflict, NotFound, ValidationFailed
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext
from agentplane.llm.errors import ProviderError
from agentplane.llm.tokens import estimate_prompt
from agentplane.usage import store
from agentplane.usage.budgets import Budgets
from agentplane.usage.errors import BudgetUnavailable
from tests.conftest import cli_env
from tests.llm.helpers import MESSAGES, row, session, tenant
from tests.llm.vendors import KEY, OpenAIHandler, serve

MAX = 8  # the offline answer is longer, so each call uses exactly what it reserves
PER_CALL = estimate_prompt(MESSAGES) + MAX
WORKER = Path(__file__).with_name("budget_worker.py")


@pytest.fixture(scope="module")
def llm(db: Database, settings: Settings) -> LLM:
    return LLM(db, settings)


async def attempt(llm: LLM, ctx: CallContext) -> str:
    try:
        await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=MAX))
        return "ok"
    except BudgetExceeded as exc:
        assert exc.extra["budget"] == "session"
        return "refused"


async def test_fifty_concurrent_calls_across_two_processes_admit_exactly_ten(
    db: Database, llm: LLM, settings: Settings
) -> None:
    t = await tenant(db)
    sid = await session(db, t.tenant_id, budget=10 * PER_CALL)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        str(WORKER),
        *(str(t.tenant_id), str(sid), "25", str(MAX), json.dumps(MESSAGES)),
        env=cli_env(settings),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        ready = await asyncio.wait_for(worker.stdout.readline(), 60)
        assert ready.decode().strip() == "ready"
        worker.stdin.write(b"go\n")
        await worker.stdin.drain()
        ctx = CallContext(tenant_id=t.tenant_id, session_id=sid)
        mine, (out, _) = await asyncio.gather(
            asyncio.gather(*(attempt(llm, ctx) for _ in range(25))),
            asyncio.wait_for(worker.communicate(), 120),
        )
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()
    out = out.decode()
    theirs = json.loads(out.strip().splitlines()[-1])
    assert mine.count("ok") + theirs["ok"] == 10
    assert mine.count("refused") + theirs["refused"] == 40
    s = await row(db, "SELECT * FROM sessions WHERE id = %s", sid)
    assert s["tokens_used"] == 10 * PER_CALL <= s["token_budget"]
    assert s["tokens_reserved"] == 0 and s["request_count"] == 10
    ledger = await row(
        db,
        "SELECT count(*) AS n, sum(total_tokens) AS total FROM usage_records WHERE session_id = %s",
        sid,
    )
    assert (ledger["n"], ledger["total"]) == (10, 10 * PER_CALL)
    calls = await row(db, "SELECT count(*) AS n FROM llm_calls WHERE session_id = %s", sid)
    assert calls["n"] == 10
    held = await row(
        db, "SELECT count(*) AS n FROM budget_reservations WHERE tenant_id = %s", t.tenant_id
    )
    assert held["n"] == 0
    tenant_row = await row(
        db, "SELECT monthly_token_usage, tokens_reserved FROM tenants WHERE id = %s", t.tenant_id
    )
    assert tenant_row == {"monthly_token_usage": 10 * PER_CALL, "tokens_reserved": 0}


async def test_tenant_monthly_limit_is_named(db: Database, llm: LLM) -> None:
    t = await tenant(db, token_limit=3 * PER_CALL)
    ctx = CallContext(tenant_id=t.tenant_id)
    results = await asyncio.gather(
        *(llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=MAX)) for _ in range(8)),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(refused) == 5 and len(results) - len(refused) == 3
    assert refused[0].extra["budget"] == "tenant" and refused[0].status == 402
    assert "tenant monthly token limit exceeded" in refused[0].detail
    assert refused[0].problem()["type"].endswith("budget-exceeded")
    used = await row(db, "SELECT monthly_token_usage FROM tenants WHERE id = %s", t.tenant_id)
    assert used["monthly_token_usage"] == 3 * PER_CALL


async def test_usage_from_an_earlier_month_does_not_count(db: Database, llm: LLM) -> None:
    t = await tenant(db, token_limit=PER_CALL)
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE tenants SET monthly_token_usage = token_limit, "
            "usage_month = date_trunc('month', now() - interval '40 days')::date WHERE id = %s",
            [t.tenant_id],
        )
    await llm.complete(
        CallContext(tenant_id=t.tenant_id), ChatRequest(messages=MESSAGES, max_tokens=MAX)
    )
    got = await row(
        db,
        "SELECT monthly_token_usage, usage_month = date_trunc('month', now())::date AS now "
        "FROM tenants WHERE id = %s",
        t.tenant_id,
    )
    assert got == {"monthly_token_usage": PER_CALL, "now": True}


async def test_api_key_budget_is_named(db: Database, llm: LLM) -> None:
    from agentplane.usage import store

    t = await tenant(db)
    async with db.tenant_connection(t.tenant_id) as conn:
        await store.set_api_key_budget(conn, t.api_key_id, PER_CALL)
    ctx = CallContext(tenant_id=t.tenant_id, api_key_id=t.api_key_id)
    await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=MAX))
    with pytest.raises(BudgetExceeded) as info:
        await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=MAX))
    assert info.value.extra["budget"] == "api_key"
    k = await row(
        db,
        "SELECT tokens_used, tokens_reserved FROM api_key_budgets WHERE api_key_id = %s",
        t.api_key_id,
    )
    assert k == {"tokens_used": PER_CALL, "tokens_reserved": 0}


async def test_budget_refusal_changes_nothing(db: Database, llm: LLM) -> None:
    t = await tenant(db, token_limit=PER_CALL - 1)
    sid = await session(db, t.tenant_id, budget=10 * PER_CALL)
    with pytest.raises(BudgetExceeded):
        await llm.complete(
            CallContext(tenant_id=t.tenant_id, session_id=sid),
            ChatRequest(messages=MESSAGES, max_tokens=MAX),
        )
    s = await row(db, "SELECT tokens_reserved, tokens_used FROM sessions WHERE id = %s", sid)
    assert s == {"tokens_reserved": 0, "tokens_used": 0}, (
        "the session reservation rolled back with the refusal"
    )
    n = await row(db, "SELECT count(*) AS n FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert n["n"] == 0


async def test_reservations_taken_together_are_admitted_or_refused_each_on_its_own(
    db: Database, settings: Settings
) -> None:
    """Reservations asked for at once go to the database in batches; a refusal in a batch undoes
    its own updates only (a session it was admitted by included), and each caller gets
    its own answer."""
    t = await tenant(db, token_limit=350)
    roomy = await session(db, t.tenant_id, budget=1000)
    tight = await session(db, t.tenant_id, budget=150)
    budgets = Budgets(db, settings)
    asked = [(roomy, 100), (tight, 100), (roomy, 100), (tight, 100), (roomy, 100), (tight, 100)]
    answers = await asyncio.gather(
        *(budgets.reserve(t.tenant_id, n, session_id=sid, api_key_id=None) for sid, n in asked),
        return_exceptions=True,
    )
    refused = [a for a in answers if isinstance(a, BudgetExceeded)]
    held = [a for a in answers if not isinstance(a, BaseException)]
    assert len(held) == 3 and len({h.id for h in held}) == 3, answers
    assert len(refused) == 3
    assert {e.extra["budget"] for e in refused} <= {"session", "tenant"}
    for sid in (roomy, tight):
        s = await row(db, "SELECT tokens_reserved FROM sessions WHERE id = %s", sid)
        assert s["tokens_reserved"] == 100 * [h.session_id for h in held].count(sid)
    tenant_row = await row(db, "SELECT tokens_reserved FROM tenants WHERE id = %s", t.tenant_id)
    assert tenant_row == {"tokens_reserved": 300}
    reservations = await row(
        db,
        "SELECT count(*) AS n, sum(tokens) AS tokens FROM budget_reservations WHERE tenant_id = %s",
        t.tenant_id,
    )
    assert reservations == {"n": 3, "tokens": 300}


async def tenant_updates(conn) -> int:
    """Updates of the tenants table by this transaction so far, and by earlier ones of its
    backend whose counts PostgreSQL has not flushed yet (it flushes them at most once a
    second): take the difference of two readings."""
    cur = await conn.execute(
        "SELECT n_tup_upd FROM pg_stat_xact_user_tables WHERE relname = 'tenants'"
    )
    return (await cur.fetchone())["n_tup_upd"]


async def test_a_batch_of_tenant_reservations_is_taken_whole_or_one_by_one(db: Database) -> None:
    """Reservations with the tenant's limit only: a batch that fits is taken at once, each
    with its own tokens, in the order asked; one that does not fit is taken one by one, so
    the reservations that fit are admitted and the rest refused."""
    t = await tenant(db, token_limit=100)
    async with db.tenant_connection(t.tenant_id) as conn:
        before = await tenant_updates(conn)
        fits = await store.reserve_many(
            conn, t.tenant_id, [(10, None, None), (20, None, None), (30, None, None)], 60, 1000
        )
        too_many = await store.reserve_many(
            conn, t.tenant_id, [(15, None, None), (30, None, None), (15, None, None)], 60, 1000
        )
        # One update of the tenant's row for the batch that fits, then one per reservation admitted.
        assert await tenant_updates(conn) - before == 1 + 2
    ids = [h["id"] for h in fits]
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT id::text, tokens FROM budget_reservations WHERE tenant_id = %s", [t.tenant_id]
        )
        tokens = {r["id"]: r["tokens"] for r in await cur.fetchall()}
    assert [tokens[i] for i in ids] == [10, 20, 30]
    assert "id" in too_many[0] and too_many[1]["code"] == "AP402" and "id" in too_many[2]
    assert tokens[too_many[0]["id"]] == 15 and tokens[too_many[2]["id"]] == 15
    assert len(tokens) == 5
    tenant_row = await row(db, "SELECT tokens_reserved FROM tenants WHERE id = %s", t.tenant_id)
    assert tenant_row == {"tokens_reserved": 90}


async def test_reservations_settled_together_apply_their_sums(db: Database) -> None:
    """Settling a batch: each budget gets the sum of its reservations' use, they are given back,
    a session counts the calls that used tokens, and a use without a reservation still counts."""
    t = await tenant(db, token_limit=1000)
    sid = await session(db, t.tenant_id, budget=1000)
    async with db.autocommit_connection() as conn:
        plain = await store.reserve_many(
            conn, t.tenant_id, [(50, None, None), (70, None, None)], 60, 1000
        )
        held = await store.reserve_many(
            conn, t.tenant_id, [(40, sid, None), (40, sid, None)], 60, 1000
        )
    ids = [h["id"] for h in plain + held] + [None]
    async with db.tenant_connection(t.tenant_id) as conn:
        before = await tenant_updates(conn)
        await store.settle_many(
            conn, ids, [None, None, sid, sid, None], [None] * 5, [30, 70, 25, 0, 5]
        )
        assert await tenant_updates(conn) - before == 1
    tenant_row = await row(
        db, "SELECT tokens_reserved, monthly_token_usage FROM tenants WHERE id = %s", t.tenant_id
    )
    assert tenant_row == {"tokens_reserved": 0, "monthly_token_usage": 130}
    s = await row(
        db, "SELECT tokens_reserved, tokens_used, request_count FROM sessions WHERE id = %s", sid
    )
    assert s == {"tokens_reserved": 0, "tokens_used": 25, "request_count": 1}
    left = await row(
        db, "SELECT count(*) AS n FROM budget_reservations WHERE tenant_id = %s", t.tenant_id
    )
    assert left == {"n": 0}


async def test_deleted_expired_and_unknown_sessions(db: Database, llm: LLM) -> None:
    import uuid
    from datetime import UTC, datetime, timedelta

    from agentplane.sessions import service

    t = await tenant(db)
    request = ChatRequest(messages=MESSAGES, max_tokens=MAX)
    with pytest.raises(NotFound):
        await llm.complete(CallContext(tenant_id=t.tenant_id, session_id=uuid.uuid4()), request)
    sid = await session(db, t.tenant_id, budget=10**6)
    async with db.tenant_connection(t.tenant_id) as conn:
        await service.delete(conn, str(sid), by=t.user_id)
    with pytest.raises(Conflict, match="deleted"):
        await llm.complete(CallContext(tenant_id=t.tenant_id, session_id=sid), request)
    old = await session(
        db, t.tenant_id, budget=10**6, expires_at=datetime.now(UTC) - timedelta(seconds=1)
    )
    with pytest.raises(Conflict, match="expired"):
        await llm.complete(CallContext(tenant_id=t.tenant_id, session_id=old), request)


async def test_negative_reservation_is_refused(db: Database, settings: Settings) -> None:
    t = await tenant(db)
    with pytest.raises(ValidationFailed):
        await Budgets(db, settings).reserve(t.tenant_id, -1, session_id=None, api_key_id=None)


async def test_failed_call_releases_its_reservation_and_is_recorded(
    db: Database, llm: LLM, settings: Settings
) -> None:
    from agentplane.llm import service
    from agentplane.llm.models import ProviderCreate

    t = await tenant(db, token_limit=10**6)
    sid = await session(db, t.tenant_id, budget=10**6)
    with serve(OpenAIHandler) as vendor:
        vendor.queue = [(500, {}, {"error": {"message": f"exploded near {KEY}"}})]
        async with db.tenant_connection(t.tenant_id) as conn:
            await service.create_provider(
                conn,
                settings,
                ProviderCreate(
                    name="flaky",
                    type="openai_compatible",
                    base_url=vendor.url + "/v1",
                    api_key=KEY,
                    model="gpt-4o",
                    config={"max_retries": 0},
                ),
            )
        with pytest.raises(ProviderError) as info:
            await llm.complete(
                CallContext(tenant_id=t.tenant_id, session_id=sid),
                ChatRequest(messages=MESSAGES, max_tokens=100),
                provider="flaky",
            )
    assert KEY not in info.value.detail and "****" in info.value.detail
    s = await row(db, "SELECT tokens_reserved, tokens_used FROM sessions WHERE id = %s", sid)
    assert s == {"tokens_reserved": 0, "tokens_used": 0}
    call = await row(
        db, "SELECT status, error, reserved_tokens FROM llm_calls WHERE session_id = %s", sid
    )
    assert call["status"] == "failed" and KEY not in call["error"] and call["reserved_tokens"] > 0
    p = await row(
        db,
        "SELECT health_status, consecutive_failures, last_error FROM llm_providers "
        "WHERE tenant_id = %s AND name = 'flaky'",
        t.tenant_id,
    )
    assert p["health_status"] == "degraded" and p["consecutive_failures"] == 1
    assert KEY not in p["last_error"]
    t_row = await row(
        db, "SELECT tokens_reserved, monthly_token_usage FROM tenants WHERE id = %s", t.tenant_id
    )
    assert t_row == {"tokens_reserved": 0, "monthly_token_usage": 0}


async def test_fail_closed_refuses_when_the_budget_is_locked(
    db: Database, settings: Settings
) -> None:
    t = await tenant(db)
    closed = LLM(db, settings.model_copy(update={"budget_lock_timeout_ms": 100}))
    opened = LLM(
        db, settings.model_copy(update={"budget_lock_timeout_ms": 100, "budget_fail_closed": False})
    )
    ctx = CallContext(tenant_id=t.tenant_id)
    request = ChatRequest(messages=MESSAGES, max_tokens=MAX)
    release = asyncio.Event()
    locked = asyncio.Event()

    async def hold_tenant_row() -> None:
        async with db.admin_connection() as conn:
            await conn.execute("SELECT 1 FROM tenants WHERE id = %s FOR UPDATE", [t.tenant_id])
            locked.set()
            await release.wait()

    holder = asyncio.create_task(hold_tenant_row())
    await locked.wait()
    try:
        with pytest.raises(BudgetUnavailable) as info:
            await closed.complete(ctx, request)
        assert info.value.status == 503 and "fail_closed" in info.value.detail.lower()
        recorded = asyncio.create_task(opened.complete(ctx, request))
        await asyncio.sleep(0.5)  # the fail-open call got its answer; recording waits on the lock
    finally:
        release.set()
        await holder
    outcome = await recorded
    assert outcome.result.completion_tokens == MAX
    used = await row(
        db, "SELECT monthly_token_usage, tokens_reserved FROM tenants WHERE id = %s", t.tenant_id
    )
    assert used == {"monthly_token_usage": PER_CALL, "tokens_reserved": 0}, (
        "fail-open still counts usage"
    )


async def test_expired_reservations_of_dead_callers_are_released(
    db: Database, settings: Settings
) -> None:
    t = await tenant(db)
    sid = await session(db, t.tenant_id, budget=1000)
    budgets = Budgets(db, settings.model_copy(update={"budget_reservation_ttl_s": 1}))
    await budgets.reserve(t.tenant_id, 600, session_id=sid, api_key_id=None)
    with pytest.raises(BudgetExceeded):
        await budgets.reserve(t.tenant_id, 600, session_id=sid, api_key_id=None)
    await budgets.release_expired()  # other tests' expired reservations: the count is this test's
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE budget_reservations SET expires_at = now() - interval '1 second' "
            "WHERE session_id = %s",
            [sid],
        )
    assert await budgets.release_expired() == 1  # the one reservation the refused call did not add
    held = await row(db, "SELECT count(*) AS n FROM budget_reservations WHERE session_id = %s",
                     sid)
    assert held["n"] == 0
    s = await row(db, "SELECT tokens_reserved FROM sessions WHERE id = %s", sid)
    assert s["tokens_reserved"] == 0
    await budgets.reserve(t.tenant_id, 600, session_id=sid, api_key_id=None)


async def test_a_journaled_reservation_left_by_a_crash_settles_to_its_use(
    db: Database, settings: Settings
) -> None:
    t = await tenant(db)
    sid = await session(db, t.tenant_id, budget=1000)
    budgets = Budgets(db, settings)
    reservation = await budgets.reserve(t.tenant_id, 600, session_id=sid, api_key_id=None)
    async with db.tenant_connection(t.tenant_id) as conn:
        await Budgets.journal(conn, reservation, 250)
    await budgets.release_expired()  # other tests' expired reservations: the count is this test's
    # The caller dies here, before settling: the sweeper settles to the journaled 250.
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE budget_reservations SET expires_at = now() - interval '1 second' WHERE id = %s",
            [reservation.id],
        )
    assert await budgets.release_expired() == 1
    await budgets.settle(t.tenant_id, reservation)  # a late settle finds nothing: applied once
    s = await row(db, "SELECT tokens_used, tokens_reserved FROM sessions WHERE id = %s", sid)
    assert s == {"tokens_used": 250, "tokens_reserved": 0}
    used = await row(db, "SELECT monthly_token_usage FROM tenants WHERE id = %s", t.tenant_id)
    assert used["monthly_token_usage"] == 250


async def test_a_new_tenant_has_no_token_limit_until_one_is_set(
    db: Database, llm: LLM, client
) -> None:
    """A limit is opt-in: a new tenant's calls are never refused by a limit it did not set,
    one or a batch at a time; a limit once set holds, and null removes it."""
    from tests.conftest import make_tenant

    t = await make_tenant(db)
    assert (await row(db, "SELECT token_limit FROM tenants WHERE id = %s", t.tenant_id)) == {
        "token_limit": None}
    ctx = CallContext(tenant_id=t.tenant_id)
    for _ in range(3):
        await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=MAX))
    other = await make_tenant(db)
    async with db.tenant_connection(other.tenant_id) as conn:
        held = await store.reserve_many(conn, other.tenant_id, [(10**15, None, None)] * 2, 60, 1)
    assert all("id" in h for h in held)
    summary = (await client.get("/v1/usage/summary", headers=t.headers)).json()
    assert summary["token_limit"] is None and summary["tokens_used"] == 3 * PER_CALL

    path = f"/v1/tenants/{t.tenant_id}"
    r = await client.patch(path, headers=t.headers, json={"token_limit": 3 * PER_CALL + 1})
    assert r.status_code == 200 and r.json()["token_limit"] == 3 * PER_CALL + 1
    with pytest.raises(BudgetExceeded):
        await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=MAX))
    r = await client.patch(path, headers=t.headers, json={"name": "renamed"})
    assert r.json()["token_limit"] == 3 * PER_CALL + 1  # not named: unchanged
    r = await client.patch(path, headers=t.headers, json={"token_limit": None})
    assert r.status_code == 200 and r.json()["token_limit"] is None


async def test_the_previous_releases_function_names_still_reserve_and_settle(
    db: Database,
) -> None:
    """A worker of the previous release calls llm_*: during a rolling deploy its
    reservations go through the same counters as the new usage_* functions'."""
    t = await tenant(db, token_limit=1000)
    sid = await session(db, t.tenant_id, budget=500)
    async with db.tenant_connection(t.tenant_id) as conn:
        cur = await conn.execute(
            "SELECT llm_reserve(%s, %s, NULL, 300, make_interval(secs => 60), '1s') AS id",
            [t.tenant_id, sid])
        rid = (await cur.fetchone())["id"]
    s = await row(db, "SELECT tokens_reserved FROM sessions WHERE id = %s", sid)
    assert s["tokens_reserved"] == 300
    with pytest.raises(BudgetExceeded, match="session token budget exceeded"):
        async with db.tenant_connection(t.tenant_id) as conn:
            await conn.execute(
                "SELECT usage_reserve(%s, %s, NULL, 300, make_interval(secs => 60), '1s')",
                [t.tenant_id, sid])
    async with db.tenant_connection(t.tenant_id) as conn:
        await conn.execute("SELECT llm_journal(%s, %s, NULL, 120)", [rid, sid])
        await conn.execute("SELECT llm_settle(%s, %s)", [t.tenant_id, rid])
    s = await row(db, "SELECT tokens_reserved, tokens_used FROM sessions WHERE id = %s", sid)
    assert (s["tokens_reserved"], s["tokens_used"]) == (0, 120)
    tn = await row(db, "SELECT tokens_reserved, monthly_token_usage FROM tenants WHERE id = %s",
                   t.tenant_id)
    assert (tn["tokens_reserved"], tn["monthly_token_usage"]) == (0, 120)
