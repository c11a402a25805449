"""Reliability with real worker processes: kill -9 mid-job, a worker killed and
restarted under load, PostgreSQL restarted under load. Every job ends as its
handler dictates (completed, or dead letter when told to fail), none is lost,
none is completed twice, and each completed job's effect is recorded once."""

from __future__ import annotations

import asyncio
import signal
import uuid

import pytest

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database
from agentplane.queue import JobQueue
from agentplane.queue.service import make_spec
from tests.conftest import cli_env
from tests.queue.workers import install_effects, kill, start_worker, stop, wait_until
from tests.support import restart


async def new_tenant(db: Database) -> uuid.UUID:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "INSERT INTO tenants (name, slug) VALUES ('q', %s) RETURNING id",
            [f"q-{uuid.uuid4().hex[:10]}"],
        )
        return (await cur.fetchone())["id"]


async def scalar(db: Database, query: str, *params) -> object:
    async with db.admin_connection() as conn:
        cur = await conn.execute(query, list(params))
        row = await cur.fetchone()
        return next(iter(row.values()))


async def assert_exactly_once(db: Database, ok: set[uuid.UUID], bad: set[uuid.UUID]) -> None:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT id, status::text FROM jobs WHERE id = ANY(%s)", [list(ok | bad)])
        status = {r["id"]: r["status"] for r in await cur.fetchall()}
        cur = await conn.execute("SELECT job_id FROM queue_effects WHERE job_id = ANY(%s)",
                                 [list(ok | bad)])
        effects = [r["job_id"] for r in await cur.fetchall()]
        cur = await conn.execute(
            "SELECT job_id, count(*) AS n FROM queue_completions WHERE job_id = ANY(%s)"
            " GROUP BY job_id", [list(ok | bad)])
        completions = {r["job_id"]: r["n"] for r in await cur.fetchall()}
    assert len(status) == len(ok | bad), "jobs were lost"
    assert {j for j, s in status.items() if s == "completed"} == ok
    assert {j for j, s in status.items() if s == "dead_letter"} == bad
    assert sorted(effects) == sorted(ok), "an effect is missing or was recorded for a failed job"
    assert set(completions) == ok and set(completions.values()) == {1}, "completed twice"


@pytest.fixture(scope="module")
def effects(endpoints: ep.Endpoints) -> None:
    install_effects(endpoints.owner)


async def test_kill_9_mid_job_is_retried_elsewhere_and_takes_effect_once(
    db: Database, settings: Settings, endpoints: ep.Endpoints, effects: None
) -> None:
    env = cli_env(settings, TEST_EFFECTS_URL=endpoints.owner)
    queue = JobQueue(db)
    tenant = await new_tenant(db)
    job = await queue.enqueue("test.effect", {"sleep_first": 60}, tenant_id=tenant,
                              allow_unknown=True)
    first = start_worker(env, "--lease", "1", "--concurrency", "2")
    try:
        await wait_until(
            lambda: scalar(db, "SELECT count(*) = 1 FROM queue_runs WHERE job_id = %s", job),
            30, "the first attempt to start")
    finally:
        kill(first)  # mid-job: the handler is asleep inside its first attempt
    assert await scalar(db, "SELECT status::text FROM jobs WHERE id = %s", job) == "running"
    second = start_worker(env, "--lease", "1", "--concurrency", "2")
    try:
        done = await queue.wait_for_result(job, tenant_id=tenant, timeout=30)
    finally:
        stop(second)
    assert done.status == "completed" and done.attempts == 2
    assert done.result == {"n": None}
    assert "lease expired" in done.errors[0]["error"]
    await assert_exactly_once(db, {job}, set())


async def test_2000_jobs_3_workers_one_killed_and_restarted(
    db: Database, settings: Settings, endpoints: ep.Endpoints, effects: None
) -> None:
    env = cli_env(settings, TEST_EFFECTS_URL=endpoints.owner)
    queue = JobQueue(db)
    tenant = await new_tenant(db)
    specs = [make_spec("test.effect", {"n": i, "sleep": 0.002, "fail": i % 40 == 0},
                       max_attempts=10, backoff_base=0.05, backoff_max=0.2)
             for i in range(2000)]
    ids = await queue.enqueue_many(specs, tenant_id=tenant, allow_unknown=True)
    bad = {ids[i] for i in range(2000) if i % 40 == 0}
    ok = set(ids) - bad
    args = ("--lease", "1", "--concurrency", "20")
    workers = [start_worker(env, *args) for _ in range(3)]
    try:
        for round_ in range(1, 5):  # kill -9 worker 0 at four points of progress
            await wait_until(
                lambda r=round_: scalar(
                    db, "SELECT count(*) >= %s FROM jobs WHERE tenant_id = %s"
                    " AND status IN ('completed', 'dead_letter')", r * 300, tenant),
                60, f"{round_ * 300} jobs done")
            kill(workers[0])
            workers[0] = start_worker(env, *args)
        await wait_until(
            lambda: scalar(db, "SELECT count(*) = 0 FROM jobs WHERE tenant_id = %s"
                           " AND status NOT IN ('completed', 'dead_letter')", tenant),
            60, "every job to finish", step=0.2)
    finally:
        for w in workers:
            stop(w)
    await assert_exactly_once(db, ok, bad)
    dead = await queue.dead_letters(tenant_id=tenant, limit=1000)
    assert {d.job_id for d in dead.items} == bad
    assert all(d.error == "PermanentError: told to fail" for d in dead.items)


async def test_sigterm_hands_back_a_long_job_after_the_grace_period(
    db: Database, settings: Settings, endpoints: ep.Endpoints, effects: None
) -> None:
    """Graceful shutdown: SIGTERM stops the claiming; the short job in flight finishes
    within the grace period; the long one outlives it, so the worker stops its
    handler and hands the job back unrun; another worker completes it."""
    env = cli_env(settings, TEST_EFFECTS_URL=endpoints.owner)
    queue = JobQueue(db)
    tenant = await new_tenant(db)
    job = await queue.enqueue("test.effect", {"sleep_first": 60}, tenant_id=tenant,
                              allow_unknown=True)
    short = await queue.enqueue("test.effect", {"sleep": 1.0}, tenant_id=tenant,
                                allow_unknown=True)
    first = start_worker(env, "--shutdown-grace", "3", "--concurrency", "3")  # a slot free
    try:
        await wait_until(
            lambda: scalar(db, "SELECT count(*) = 2 FROM queue_runs WHERE job_id = ANY(%s)",
                           [job, short]),
            30, "both jobs to start")
        first.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.2)  # the signal is handled
        unclaimed = await queue.enqueue("test.effect", {}, tenant_id=tenant,
                                        allow_unknown=True)
    finally:
        err = stop(first)
    assert first.returncode == 0, err
    finished = await queue.get(short, tenant_id=tenant)
    assert finished.status == "completed" and finished.attempts == 1
    assert (await queue.get(unclaimed, tenant_id=tenant)).status == "pending", \
        "a stopping worker claims nothing new"
    handed_back = await queue.get(job, tenant_id=tenant)
    assert handed_back.status == "queued" and handed_back.attempts == 1
    assert handed_back.lease_expires_at is None and handed_back.errors == []
    second = start_worker(env, "--concurrency", "2")
    try:
        done = await queue.wait_for_result(job, tenant_id=tenant, timeout=30)
        await queue.wait_for_result(unclaimed, tenant_id=tenant, timeout=30)
    finally:
        stop(second)
    assert done.status == "completed" and done.attempts == 2
    assert done.worker_id != handed_back.worker_id
    assert finished.worker_id == handed_back.worker_id
    await assert_exactly_once(db, {job, short, unclaimed}, set())


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory):
    with restart.own_server(tmp_path_factory, install_effects) as found:
        yield found


async def test_postgres_restart_under_load(own_server) -> None:
    server, conf, endpoints = own_server
    db = Database(conf, endpoints)
    await db.open()
    env = cli_env(conf, TEST_EFFECTS_URL=endpoints.owner)
    workers = []
    try:
        queue = JobQueue(db)
        tenant = await new_tenant(db)
        specs = [make_spec("test.effect", {"n": i, "sleep": 0.005, "fail": i % 50 == 0},
                           max_attempts=20, backoff_base=0.05, backoff_max=0.5)
                 for i in range(1000)]
        ids = await queue.enqueue_many(specs, tenant_id=tenant, allow_unknown=True)
        bad = {ids[i] for i in range(1000) if i % 50 == 0}
        workers = [start_worker(env, "--lease", "2", "--concurrency", "20") for _ in range(2)]
        await wait_until(
            lambda: scalar(db, "SELECT count(*) >= 200 FROM jobs WHERE status = 'completed'"),
            60, "200 jobs done")
        server.stop()  # fast shutdown: every connection is cut mid-flight
        server.start()
        await db.close()  # the test's own pool: fresh connections after the restart
        db = Database(conf, endpoints)
        await db.open()
        await wait_until(
            lambda: scalar(db, "SELECT count(*) = 0 FROM jobs"
                           " WHERE status NOT IN ('completed', 'dead_letter')"),
            60, "every job to finish", step=0.2)
        await assert_exactly_once(db, set(ids) - bad, bad)
        assert all(w.poll() is None for w in workers), "a worker died with the database"
    finally:
        for w in workers:
            stop(w)
        await db.close()
