"""The queue's Python API: enqueue in the caller's transaction, bad input, cancel,
pause/resume, limits, fairness, schedules, fencing. Workers run in-process here."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from agentplane.db.pool import Database
from agentplane.errors import Conflict, NotFound, ValidationFailed
from agentplane.queue import JobQueue, Limit, PermanentError, Registry
from agentplane.queue import schedules as sched
from agentplane.queue.service import make_spec
from agentplane.queue.worker import Worker, WorkerOptions
from tests.queue.test_queue_reliability import new_tenant, scalar


async def count_jobs(db: Database, tenant: uuid.UUID) -> int:
    return await scalar(db, "SELECT count(*) FROM jobs WHERE tenant_id = %s", tenant)


async def run_until_completed(
    queue: JobQueue, workers: list[Worker], ids: list, tenant, per_job: float
) -> None:
    """The workers run until every job of `ids` has completed."""
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        for job in ids:
            done = await queue.wait_for_result(job, tenant_id=tenant, timeout=per_job)
            assert done.status == "completed"
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)


async def test_enqueue_rolls_back_with_the_callers_transaction(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    with pytest.raises(RuntimeError):
        async with db.tenant_connection(tenant) as conn:
            await queue.enqueue("x", {}, conn=conn, allow_unknown=True)
            raise RuntimeError("the caller's own work failed")
    assert await count_jobs(db, tenant) == 0
    async with db.tenant_connection(tenant) as conn:
        job_id = await queue.enqueue("x", {"a": 1}, conn=conn, allow_unknown=True)
    assert (await queue.get(job_id, tenant_id=tenant)).payload == {"a": 1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type_": "nobody.handles.this"}, "unknown job type"),
        ({"payload": {"x": object()}}, "not JSON-serialisable"),
        ({"payload": {"x": float("nan")}}, "not JSON-serialisable"),
        ({"priority": "urgent"}, "priority"),
        ({"delay": -1}, "delay"),
        ({"delay": 10**9}, "delay"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"queue": "no spaces allowed"}, "queue"),
    ],
)
async def test_bad_enqueue_is_refused_and_writes_nothing(
    db: Database, kwargs: dict, message: str
) -> None:
    tenant = await new_tenant(db)
    args = {"type_": "known", "payload": {}, **kwargs}
    allow = args["type_"] == "known"
    with pytest.raises(ValidationFailed, match=message):
        await JobQueue(db).enqueue(args.pop("type_"), args.pop("payload"), tenant_id=tenant,
                                   allow_unknown=allow, **args)
    assert await count_jobs(db, tenant) == 0


async def test_cancel_waiting_then_finished_is_409(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    job_id = await queue.enqueue("x", {}, tenant_id=tenant, allow_unknown=True)
    assert (await queue.cancel(job_id, tenant_id=tenant)).status == "cancelled"
    with pytest.raises(Conflict, match="already cancelled"):
        await queue.cancel(job_id, tenant_id=tenant)
    other = await new_tenant(db)
    with pytest.raises(Exception, match="not found"):  # RLS: another tenant's job is not there
        await queue.cancel(job_id, tenant_id=other)


async def test_idempotency_key_gives_the_live_job(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    a = await queue.enqueue("x", {}, tenant_id=tenant, allow_unknown=True, idempotency_key="k")
    b = await queue.enqueue("x", {}, tenant_id=tenant, allow_unknown=True, idempotency_key="k")
    assert a == b and await count_jobs(db, tenant) == 1
    other = await new_tenant(db)  # unique per tenant only
    assert await queue.enqueue("x", {}, tenant_id=other, allow_unknown=True,
                               idempotency_key="k") != a
    await queue.cancel(a, tenant_id=tenant)  # a finished job frees its key
    c = await queue.enqueue("x", {}, tenant_id=tenant, allow_unknown=True, idempotency_key="k")
    assert c != a and await count_jobs(db, tenant) == 2
    [d, e] = await queue.enqueue_many([make_spec("x", idempotency_key="k"),
                                       make_spec("x", idempotency_key="k2")],
                                      tenant_id=tenant, allow_unknown=True)
    assert d == c and e not in (a, c) and await count_jobs(db, tenant) == 3


def registry_with(log: list, signal: tuple | None = None) -> Registry:
    """`signal`: (event, predicate on the log) -- the event is set once the predicate holds."""
    reg = Registry()

    @reg.handler("rec")
    async def rec(ctx) -> int:
        log.append((ctx.tenant_id, ctx.payload.get("n")))
        if signal is not None and signal[1](log, ctx):
            signal[0].set()
        if ctx.payload.get("wait_cancel"):
            await ctx.wait_cancelled()
            ctx.raise_if_cancelled()
        return ctx.attempt

    return reg


async def run_worker(db: Database, reg: Registry, until, **opts) -> None:
    worker = Worker(db.endpoints.app, WorkerOptions(poll_interval=0.05, **opts), reg)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(until(), 30)
    finally:
        worker.stop()
        await task


async def test_fairness_small_tenant_is_not_starved(db: Database) -> None:
    """Policy: each claim visits tenants with waiting jobs round-robin and gives each
    an equal share of the batch; one tenant's 100,000 waiting jobs, enqueued first
    and of the same priority, do not delay another tenant's."""
    big, small = await new_tenant(db), await new_tenant(db)
    queue = JobQueue(db)
    q = f"f{uuid.uuid4().hex[:6]}"
    for lo in range(0, 100_000, 10_000):
        await queue.enqueue_many([make_spec("rec", {"n": i}, queue=q)
                                  for i in range(lo, lo + 10_000)],
                                 tenant_id=big, allow_unknown=True)
    await queue.enqueue_many([make_spec("rec", {"n": i}, queue=q) for i in range(10)],
                             tenant_id=small, allow_unknown=True)
    log: list = []
    done = asyncio.Event()
    reg = registry_with(log, (done, lambda lg, _: sum(1 for t, _ in lg if t == small) == 10))
    try:
        await run_worker(db, reg, done.wait, concurrency=20, queues=(q,))
    finally:
        async with db.admin_connection() as conn:  # the backlog is in nobody's way after
            await conn.execute("DELETE FROM jobs WHERE tenant_id = %s", [big])
    position = max(i for i, (t, _) in enumerate(log) if t == small)
    assert position < 100, f"the small tenant's last job ran {position}th"


async def test_fair_shares_do_not_leave_free_slots_idle(db: Database) -> None:
    """A claim's fair shares are a floor, not a cap: slots that other tenants cannot
    fill (they have one job, or jobs only in other queues or not yet due) go to the
    tenant with the backlog at once, not after the next poll."""
    big, small = await new_tenant(db), await new_tenant(db)
    queue = JobQueue(db)
    q = f"s{uuid.uuid4().hex[:6]}"
    for _ in range(10):  # more tenants than a claim visits, with jobs it cannot take
        await queue.enqueue("rec", {}, tenant_id=await new_tenant(db), queue=q, delay=3600,
                            allow_unknown=True)
        await queue.enqueue("rec", {}, tenant_id=await new_tenant(db), queue=f"{q}-other",
                            allow_unknown=True)
    ids = await queue.enqueue_many([make_spec("rec", {"n": i}, queue=q) for i in range(60)],
                                   tenant_id=big, allow_unknown=True)
    ids.append(await queue.enqueue("rec", {}, tenant_id=small, queue=q, allow_unknown=True))
    # Every job waits for the gate: what runs before it opens was claimed before any poll.
    gate, full, running = asyncio.Event(), asyncio.Event(), []
    reg = Registry()

    @reg.handler("rec")
    async def rec(ctx) -> None:
        running.append(ctx.tenant_id)
        if len(running) == 20:
            full.set()
        await gate.wait()

    poll = 10.0
    worker = Worker(db.endpoints.app, WorkerOptions(queues=(q,), concurrency=20,
                                                    poll_interval=poll), reg)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.create_task(worker.run())
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(full.wait(), poll / 2)  # not after the next poll
        assert full.is_set(), f"{len(running)} of 20 slots filled before the next poll"
        # The small tenant's one job takes its share; the big tenant fills every other slot.
        assert len(running) == 20
        assert (running.count(small), running.count(big)) == (1, 19)
        gate.set()
        for job in ids:  # each freed slot is filled again at once, no poll in between
            done = await queue.wait_for_result(job, tenant_id=None, timeout=poll / 2)
            assert done.status == "completed"
        assert loop.time() - started < poll, "a claim waited for the poll interval"
    finally:
        gate.set()
        worker.stop()
        await task
    assert len(running) == 61 and set(running) == {big, small}  # nothing it could not take


async def test_pause_resume_and_running_cancel(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"p{uuid.uuid4().hex[:6]}"
    held = await queue.enqueue("rec", {"n": 1}, tenant_id=tenant, queue=q, allow_unknown=True)
    assert await queue.pause(q) == 1
    late = await queue.enqueue("rec", {"n": 2}, tenant_id=tenant, queue=q, allow_unknown=True)
    assert (await queue.get(late, tenant_id=tenant)).status == "paused"
    log: list = []
    started = asyncio.Event()
    reg = registry_with(log, (started, lambda _, ctx: bool(ctx.payload.get("wait_cancel"))))
    worker = Worker(db.endpoints.app, WorkerOptions(queues=(q,), poll_interval=0.05, lease=1.5),
                    reg)
    task = asyncio.create_task(worker.run())
    try:
        assert await queue.resume(q) == 2
        for job in (held, late):
            assert (await queue.wait_for_result(job, tenant_id=tenant, timeout=10)).status == \
                "completed"
        running = await queue.enqueue("rec", {"wait_cancel": True}, tenant_id=tenant, queue=q,
                                      allow_unknown=True)
        await asyncio.wait_for(started.wait(), 10)
        assert (await queue.cancel(running, tenant_id=tenant)).cancel_requested
        done = await queue.wait_for_result(running, tenant_id=tenant, timeout=10)
        assert done.status == "cancelled"
    finally:
        worker.stop()
        await task


class Peak:
    """How many "slow" jobs ran at once, at most."""

    def __init__(self) -> None:
        self.running = 0
        self.highest = 0


def peak_tracking_registry() -> tuple[Registry, Peak]:
    """A registry whose "slow" handler sleeps briefly, recording how many run at once."""
    reg, peak = Registry(), Peak()

    @reg.handler("slow")
    async def slow(ctx) -> None:
        peak.running += 1
        peak.highest = max(peak.highest, peak.running)
        await asyncio.sleep(0.05)
        peak.running -= 1

    return reg, peak


async def test_concurrency_limit_holds_across_workers(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    key = f"provider-{uuid.uuid4().hex[:6]}"
    await queue.set_limit(Limit(key=key, max_running=2))
    q = f"l{uuid.uuid4().hex[:6]}"
    reg, peak = peak_tracking_registry()
    ids = await queue.enqueue_many(
        [make_spec("slow", queue=q, concurrency_key=key) for _ in range(12)],
        tenant_id=tenant, allow_unknown=True)
    workers = [Worker(db.endpoints.app, WorkerOptions(queues=(q,), concurrency=10,
                                                       poll_interval=0.05), reg)
               for _ in range(2)]
    await run_until_completed(queue, workers, ids, tenant, per_job=20)
    assert peak.highest == 2
    assert await scalar(db, "SELECT running FROM job_limits WHERE key = %s", key) == 0


async def test_fencing_stale_attempt_cannot_write(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    job = await queue.enqueue("x", {}, tenant_id=tenant, allow_unknown=True, queue="fence")
    async with db.app_connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM queue_claim('w1', '{fence}', 1, 0.001, %s, 1, 16)", [uuid.uuid4()])
        assert (await cur.fetchone())["attempts"] == 1
    async with db.app_connection() as conn:  # the lease lapsed: w2 takes attempt 2
        await conn.execute("SELECT pg_sleep(0.01)")
    async with db.app_connection() as conn:
        assert (await (await conn.execute("SELECT queue_recover(10) AS n")).fetchone())["n"] == 1
    async with db.admin_connection() as conn:  # skip the retry backoff
        await conn.execute("UPDATE jobs SET scheduled_at = now() WHERE id = %s", [job])
    async with db.app_connection() as conn:
        cur = await conn.execute(
            "SELECT * FROM queue_claim('w2', '{fence}', 1, 30, %s, 1, 16)", [uuid.uuid4()])
        assert (await cur.fetchone())["attempts"] == 2
        cur = await conn.execute(
            "SELECT * FROM queue_complete('w1', %s, %s, '{1}', %s::jsonb[])",
            [[tenant], [job], ['"stale"']])
        assert await cur.fetchall() == []
        cur = await conn.execute(
            "SELECT * FROM queue_complete('w2', %s, %s, '{2}', %s::jsonb[])",
            [[tenant], [job], ['"fresh"']])
        assert len(await cur.fetchall()) == 1
    assert (await queue.get(job, tenant_id=tenant)).result == "fresh"


async def test_a_cancel_request_outlives_the_attempt_it_was_made_for(db: Database) -> None:
    """A running job asked to stop is not run again: neither when its worker dies
    before seeing the flag (lease recovery), nor when its handler fails with a
    retryable error or is handed back at shutdown."""
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"k{uuid.uuid4().hex[:6]}"
    ids = [await queue.enqueue("x", {}, tenant_id=tenant, queue=q, allow_unknown=True,
                               max_attempts=5) for _ in range(3)]
    async with db.app_connection() as conn:
        cur = await conn.execute(
            "SELECT id, attempts FROM queue_claim('w', %s, 3, 0.05, %s, 3, 16)",
            [[q], uuid.uuid4()])
        attempts = {r["id"]: r["attempts"] for r in await cur.fetchall()}
    assert set(attempts) == set(ids)
    for job in ids:
        assert (await queue.cancel(job, tenant_id=tenant)).cancel_requested
    lost, failing, handed_back = ids
    async with db.app_connection() as conn:
        for job, outcome in ((failing, "error"), (handed_back, "released")):
            cur = await conn.execute(
                "SELECT queue_finish('w', %s, %s, %s, %s, 'boom', NULL) AS s",
                [tenant, job, attempts[job], outcome])
            assert (await cur.fetchone())["s"] == "cancelled"
    await asyncio.sleep(0.1)  # the first job's lease lapses
    async with db.app_connection() as conn:
        assert (await (await conn.execute("SELECT queue_recover(10) AS n")).fetchone())["n"] == 1
    for job in ids:
        done = await queue.get(job, tenant_id=tenant)
        assert done.status == "cancelled" and done.finished_at is not None, job
    assert "lease expired" in (await queue.get(lost, tenant_id=tenant)).errors[0]["error"]
    async with db.app_connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM queue_claim('w', %s, 3, 30, %s, 3, 16)", [[q], uuid.uuid4()])
        assert await cur.fetchall() == []
    assert await scalar(db, "SELECT count(*) FROM dead_letters WHERE tenant_id = %s",
                        tenant) == 0


async def test_notify_wakes_an_idle_worker_and_polling_finds_delayed_jobs(
    db: Database,
) -> None:
    """Polling every 30 s, a worker still starts a new job at once (NOTIFY), and only
    on its own queues. A delayed job sends no notification when it comes due: the
    poll picks it up."""
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q, elsewhere = f"n{uuid.uuid4().hex[:6]}", f"m{uuid.uuid4().hex[:6]}"
    log: list = []
    deaf = Worker(db.endpoints.app, WorkerOptions(queues=(q,), poll_interval=30),
                  registry_with(log))
    task = asyncio.create_task(deaf.run())
    try:
        await asyncio.sleep(0.5)  # started, listening, and idle until the next poll
        other = await queue.enqueue("rec", {}, tenant_id=tenant, queue=elsewhere,
                                    allow_unknown=True)
        job = await queue.enqueue("rec", {"n": 1}, tenant_id=tenant, queue=q,
                                  allow_unknown=True)
        done = await queue.wait_for_result(job, tenant_id=tenant, timeout=5)
        assert done.status == "completed"
        assert (done.started_at - done.created_at).total_seconds() < 1
        assert (await queue.get(other, tenant_id=tenant)).status == "pending"
    finally:
        deaf.stop()
        await task
    polling = Worker(db.endpoints.app, WorkerOptions(queues=(q,), poll_interval=0.2),
                     registry_with(log))
    task = asyncio.create_task(polling.run())
    try:
        await asyncio.sleep(0.3)
        later = await queue.enqueue("rec", {"n": 2}, tenant_id=tenant, queue=q, delay=0.5,
                                    allow_unknown=True)
        done = await queue.wait_for_result(later, tenant_id=tenant, timeout=5)
    finally:
        polling.stop()
        await task
    assert done.status == "completed" and done.started_at >= done.scheduled_at
    assert (done.started_at - done.scheduled_at).total_seconds() < 1


async def test_a_worker_runs_at_most_its_concurrency(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"c{uuid.uuid4().hex[:6]}"
    reg, peak = peak_tracking_registry()
    ids = await queue.enqueue_many([make_spec("slow", queue=q) for _ in range(15)],
                                   tenant_id=tenant, allow_unknown=True)
    worker = Worker(db.endpoints.app, WorkerOptions(queues=(q,), concurrency=3,
                                                    poll_interval=0.05), reg)
    await run_until_completed(queue, [worker], ids, tenant, per_job=20)
    assert peak.highest == 3


async def test_heartbeats_keep_a_long_job_s_lease(db: Database) -> None:
    """A handler running for several lease lengths keeps its job: heartbeats extend
    the lease, and the lease recovery every worker runs leaves it alone."""
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"h{uuid.uuid4().hex[:6]}"
    reg = Registry()

    @reg.handler("long")
    async def long(ctx) -> int:
        await asyncio.sleep(2.0)
        return ctx.attempt

    job = await queue.enqueue("long", {}, tenant_id=tenant, queue=q, allow_unknown=True)
    workers = [Worker(db.endpoints.app, WorkerOptions(queues=(q,), lease=0.6,
                                                       poll_interval=0.05), reg)
               for _ in range(2)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        done = await queue.wait_for_result(job, tenant_id=tenant, timeout=15)
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    assert done.status == "completed" and done.attempts == 1 and done.result == 1
    assert done.errors == [] and done.heartbeat_at > done.started_at


async def test_running_workers_fire_a_schedule_once_for_its_latest_tick(db: Database) -> None:
    """Three workers run their maintenance (lease recovery, due schedules) several
    times a second; a schedule ten minutes overdue enqueues one job, not one per
    worker nor one per missed tick, and moves to its next tick."""
    tenant = await new_tenant(db)
    s = await sched.create(db, {"name": "w", "cron": "* * * * *", "type": "sched.w",
                                "payload": {"from": "cron"}, "queue": "sched-w"},
                           tenant_id=tenant)
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE schedules SET next_run_at = now() - interval '10 minutes'"
                           " WHERE id = %s", [s.id])
    started = datetime.now(UTC)
    workers = [Worker(db.endpoints.app, WorkerOptions(queues=(f"none-{i}",), poll_interval=0.05,
                                                       lease=0.3), Registry())
               for i in range(3)]
    tasks = [asyncio.create_task(w.run()) for w in workers]
    try:
        for _ in range(100):
            if await scalar(db, "SELECT last_run_at IS NOT NULL FROM schedules WHERE id = %s",
                            s.id):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # every worker has run its maintenance again since
    finally:
        for w in workers:
            w.stop()
        await asyncio.gather(*tasks)
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT payload, status::text, idempotency_key FROM jobs"
                                 " WHERE tenant_id = %s AND type = 'sched.w'", [tenant])
        jobs = await cur.fetchall()
        cur = await conn.execute("SELECT next_run_at > now() AS ahead, last_job_id"
                                 " FROM schedules WHERE id = %s", [s.id])
        after = await cur.fetchone()
    # Each job names its tick. The overdue schedule fired its latest missed tick only (not
    # the nine before it), and each tick once; a second job can only be the next minute's
    # tick, fired because the test ran across it.
    ticks = sorted(datetime.fromisoformat(j.pop("idempotency_key").split(":", 2)[2] + "+00:00")
                   for j in jobs)
    assert len(set(ticks)) == len(ticks) and 1 <= len(ticks) <= 2, ticks
    assert ticks[0] > started - timedelta(minutes=1)
    assert ticks[-1] - ticks[0] in (timedelta(0), timedelta(minutes=1))
    assert all(j == {"payload": {"from": "cron"}, "status": "pending"} for j in jobs)
    assert after["ahead"] and after["last_job_id"] is not None
    assert [x.id for x in await sched.list_(db, tenant_id=tenant)] == [s.id]
    await sched.delete(db, s.id, tenant_id=tenant)
    with pytest.raises(NotFound):
        await sched.delete(db, s.id, tenant_id=tenant)
    assert await sched.list_(db, tenant_id=tenant) == []


def test_cron_ticks_in_a_time_zone() -> None:
    after = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    # 09:00 in Paris is 08:00 UTC before the DST switch (March 29) and 07:00 after.
    assert sched.next_tick("0 9 * * *", "Europe/Paris", after) == datetime(
        2026, 3, 29, 7, 0, tzinfo=UTC)
    with pytest.raises(ValidationFailed, match="invalid cron"):
        sched.next_tick("61 * * * *", "UTC", after)
    with pytest.raises(ValidationFailed, match="time zone"):
        sched.next_tick("* * * * *", "Mars/Olympus", after)


async def test_schedule_fires_once_per_tick_with_many_firers(db: Database) -> None:
    tenant = await new_tenant(db)
    with pytest.raises(ValidationFailed, match="invalid cron"):
        await sched.create(db, {"name": "bad", "cron": "every minute", "type": "x"},
                           tenant_id=tenant)
    with pytest.raises(ValidationFailed, match="time zone"):
        await sched.create(db, {"name": "bad", "cron": "* * * * *", "timezone": "Mars/Base",
                                "type": "x"}, tenant_id=tenant)
    assert await scalar(db, "SELECT count(*) FROM schedules WHERE tenant_id = %s", tenant) == 0
    s = await sched.create(db, {"name": "tick", "cron": "* * * * *", "type": "sched.x",
                                "queue": "sched"}, tenant_id=tenant)
    async with db.admin_connection() as conn:  # make it due now
        await conn.execute("UPDATE schedules SET next_run_at = now() - interval '1 second'"
                           " WHERE id = %s", [s.id])

    async def fire() -> int:
        async with db.app_connection() as conn:
            return await sched.fire_due(conn)

    fired = await asyncio.gather(*[fire() for _ in range(6)])
    assert sum(fired) == 1
    assert await scalar(db, "SELECT count(*) FROM jobs WHERE tenant_id = %s AND type = 'sched.x'",
                        tenant) == 1


async def test_rate_limit_holds_across_two_workers(db: Database) -> None:
    """A token bucket per key in the database: in any window of w seconds at most
    burst + rate * w jobs of the key start, whichever worker claims them."""
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    key, rate, burst = f"rate-{uuid.uuid4().hex[:6]}", 10.0, 2
    await queue.set_limit(Limit(key=key, rate_per_second=rate, burst=burst))
    q = f"r{uuid.uuid4().hex[:6]}"
    reg = Registry()
    by_worker: dict[str, int] = {}

    @reg.handler("tick")
    async def tick(ctx) -> None:
        by_worker[ctx.worker_id] = by_worker.get(ctx.worker_id, 0) + 1
        await asyncio.sleep(0.15)  # busy longer than a token takes: the other worker claims

    ids = await queue.enqueue_many(
        [make_spec("tick", queue=q, concurrency_key=key) for _ in range(12)],
        tenant_id=tenant, allow_unknown=True)
    workers = [Worker(db.endpoints.app, WorkerOptions(queues=(q,), concurrency=1,
                                                       poll_interval=0.02), reg)
               for _ in range(2)]
    await run_until_completed(queue, workers, ids, tenant, per_job=20)
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT started_at FROM jobs WHERE id = ANY(%s)"
                                 " ORDER BY started_at", [ids])
        starts = [r["started_at"] for r in await cur.fetchall()]
    for i in range(len(starts)):
        for j in range(i + 1, len(starts)):
            window = (starts[j] - starts[i]).total_seconds()
            assert j - i + 1 <= burst + rate * (window + 0.02), (
                f"{j - i + 1} jobs started within {window:.3f}s")
    assert len(by_worker) == 2, "both workers should have taken part"


async def test_jobs_held_by_a_rate_limit_run_as_tokens_come_not_at_the_next_poll(
    db: Database,
) -> None:
    """The limit is a ceiling, not a poll-paced trickle: a worker that polls every
    30 s runs 20 jobs of a 20/s key in about a second (each claim that is held back
    says when the next token comes, and the worker claims again then)."""
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    key, q = f"rate-{uuid.uuid4().hex[:6]}", f"r{uuid.uuid4().hex[:6]}"
    await queue.set_limit(Limit(key=key, rate_per_second=20.0, burst=1))
    reg = Registry()

    @reg.handler("tick")
    async def tick(ctx) -> None:
        return None

    ids = await queue.enqueue_many(
        [make_spec("tick", queue=q, concurrency_key=key) for _ in range(20)],
        tenant_id=tenant, allow_unknown=True)
    worker = Worker(db.endpoints.app, WorkerOptions(queues=(q,), poll_interval=30), reg)
    await run_until_completed(queue, [worker], ids, tenant, per_job=10)
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT min(started_at) AS a, max(started_at) AS b FROM jobs"
                                 " WHERE id = ANY(%s)", [ids])
        row = await cur.fetchone()
    span = (row["b"] - row["a"]).total_seconds()
    assert 19 / 20 - 0.02 <= span < 5, f"20 jobs at 20/s started over {span:.2f}s"


async def test_job_past_its_timeout_fails_and_is_retried(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"t{uuid.uuid4().hex[:6]}"
    reg = Registry()

    @reg.handler("slow")
    async def slow(ctx) -> int:
        if ctx.attempt == 1 or ctx.payload.get("always"):
            await asyncio.sleep(30)
        return ctx.attempt

    retried = await queue.enqueue("slow", {}, tenant_id=tenant, queue=q, allow_unknown=True,
                                  timeout=0.2, max_attempts=2, backoff_base=0.05,
                                  backoff_max=0.1)
    exhausted = await queue.enqueue("slow", {"always": True}, tenant_id=tenant, queue=q,
                                    allow_unknown=True, timeout=0.2, max_attempts=1)
    worker = Worker(db.endpoints.app, WorkerOptions(queues=(q,), poll_interval=0.05), reg)
    task = asyncio.create_task(worker.run())
    try:
        done = await queue.wait_for_result(retried, tenant_id=tenant, timeout=10)
        dead = await queue.wait_for_result(exhausted, tenant_id=tenant, timeout=10)
    finally:
        worker.stop()
        await task
    assert done.status == "completed" and done.attempts == 2 and done.result == 2
    assert done.errors[0]["error"] == "timed out after 0.2s"
    assert dead.status == "dead_letter" and dead.last_error == "timed out after 0.2s"


async def test_wait_for_result_is_woken_by_a_notification(db: Database, monkeypatch) -> None:
    """No polling needed: with the poll interval at a minute, a wait still returns as
    soon as the job completes or is cancelled; without a listener, it polls."""
    from agentplane.queue import service

    monkeypatch.setattr(service, "WAIT_POLL", 60.0)
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"w{uuid.uuid4().hex[:6]}"
    job = await queue.enqueue("rec", {}, tenant_id=tenant, queue=q, allow_unknown=True)
    waiter = asyncio.create_task(queue.wait_for_result(job, tenant_id=tenant, timeout=30))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # it read the job pending and sleeps on the channel
    worker = Worker(db.endpoints.app, WorkerOptions(queues=(q,), poll_interval=0.05),
                    registry_with([]))
    task = asyncio.create_task(worker.run())
    try:
        assert (await asyncio.wait_for(waiter, 10)).status == "completed"
    finally:
        worker.stop()
        await task

    idle = await queue.enqueue("rec", {}, tenant_id=tenant, queue=f"{q}-idle",
                               allow_unknown=True)
    waiter = asyncio.create_task(queue.wait_for_result(idle, tenant_id=tenant, timeout=30))
    await asyncio.sleep(0.3)
    await queue.cancel(idle, tenant_id=tenant)
    assert (await asyncio.wait_for(waiter, 10)).status == "cancelled"

    async def refused(conninfo: str) -> None:
        raise service.psycopg.OperationalError("LISTEN refused")

    monkeypatch.setattr(service, "_listen", refused)
    polled = await queue.enqueue("rec", {}, tenant_id=tenant, queue=f"{q}-poll",
                                 allow_unknown=True)
    waiter = asyncio.create_task(queue.wait_for_result(polled, tenant_id=tenant, timeout=30))
    await asyncio.sleep(0.3)
    await queue.cancel(polled, tenant_id=tenant)
    assert (await asyncio.wait_for(waiter, 10)).status == "cancelled"


async def test_claim_order_is_priority_then_schedule_time(db: Database) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"o{uuid.uuid4().hex[:6]}"
    order = ["background", "low", "normal", "high", "critical"]
    ids = {p: await queue.enqueue("x", {}, tenant_id=tenant, queue=q, priority=p,
                                  allow_unknown=True) for p in order}
    later = await queue.enqueue("x", {}, tenant_id=tenant, queue=q, priority="critical",
                                allow_unknown=True)
    claimed = []
    async with db.app_connection() as conn:
        for _ in range(len(order) + 1):
            cur = await conn.execute(
                "SELECT id FROM queue_claim('w', %s, 1, 30, %s, 1, 16)", [[q], uuid.uuid4()])
            claimed += [r["id"] for r in await cur.fetchall()]
    assert claimed == [ids["critical"], later, ids["high"], ids["normal"], ids["low"],
                       ids["background"]]


async def test_backoff_is_exponential_capped_and_jittered(db: Database) -> None:
    async with db.app_connection() as conn:
        cur = await conn.execute(
            "SELECT n, extract(epoch FROM queue_backoff(n, 1, 10))::float8 AS s"
            " FROM generate_series(1, 6) n, generate_series(1, 50)")
        rows = await cur.fetchall()
    for n in range(1, 7):
        delays = [r["s"] for r in rows if r["n"] == n]
        full = min(10, 2 ** (n - 1))
        assert all(full / 2 <= d <= full for d in delays), (n, min(delays), max(delays))
        assert len(set(delays)) > 1, "no jitter"


async def test_retryable_errors_retry_permanent_ones_go_straight_to_dead_letters(
    db: Database,
) -> None:
    tenant = await new_tenant(db)
    queue = JobQueue(db)
    q = f"e{uuid.uuid4().hex[:6]}"
    reg = Registry()

    @reg.handler("flaky")
    async def flaky(ctx) -> None:
        raise ValueError(f"boom {ctx.attempt}")

    @reg.handler("fatal")
    async def fatal(ctx) -> None:
        raise PermanentError("cannot ever work")

    flaky_id = await queue.enqueue("flaky", {"k": 1}, tenant_id=tenant, queue=q,
                                   max_attempts=3, backoff_base=0.02, backoff_max=0.05,
                                   allow_unknown=True)
    fatal_id = await queue.enqueue("fatal", {}, tenant_id=tenant, queue=q, max_attempts=5,
                                   allow_unknown=True)
    worker = Worker(db.endpoints.app, WorkerOptions(queues=(q,), poll_interval=0.02), reg)
    task = asyncio.create_task(worker.run())
    try:
        flaky_job = await queue.wait_for_result(flaky_id, tenant_id=tenant, timeout=10)
        fatal_job = await queue.wait_for_result(fatal_id, tenant_id=tenant, timeout=10)
    finally:
        worker.stop()
        await task
    assert flaky_job.status == fatal_job.status == "dead_letter"
    assert flaky_job.attempts == 3 and fatal_job.attempts == 1
    dead = {d.job_id: d for d in (await queue.dead_letters(tenant_id=tenant)).items}
    history = dead[flaky_id].retry_history
    assert [h["attempt"] for h in history] == [1, 2, 3]
    times = [datetime.fromisoformat(h["at"]) for h in history]
    assert times == sorted(times) and times[-1] <= dead[flaky_id].moved_at
    assert [h["error"] for h in history] == [f"ValueError: boom {n}" for n in (1, 2, 3)]
    assert dead[flaky_id].payload == {"k": 1} and dead[flaky_id].error == "ValueError: boom 3"
    assert "raise ValueError" in dead[flaky_id].error_stack
    assert dead[fatal_id].error == "PermanentError: cannot ever work"
    assert len(dead[fatal_id].retry_history) == 1
    requeued = await queue.requeue(dead[flaky_id].id, tenant_id=tenant)
    fresh = await queue.get(requeued, tenant_id=tenant)
    assert requeued != flaky_id and fresh.status == "pending" and fresh.attempts == 0
    assert fresh.payload == {"k": 1} and fresh.queue == q
    with pytest.raises(Conflict, match="already requeued"):
        await queue.requeue(dead[flaky_id].id, tenant_id=tenant)
