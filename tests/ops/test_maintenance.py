"""Maintenance that runs on its own: a real worker process claims the system tasks and
creates partitions, applies retention, closes billing periods and refreshes the views;
claims are exclusive; retention of llm_calls and events; a failed system task."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.ops import service as ops
from tests.conftest import cli_env, make_tenant
from tests.queue.workers import start_worker, stop, wait_until
from tests.support.dates import in_month
from tests.usage.helpers import agent_and_run, insert_records, record


async def scalar(db: Database, sql: str, *params: object) -> object:
    async with db.admin_connection() as conn:
        cur = await conn.execute(sql, list(params))
        return next(iter((await cur.fetchone()).values()))


async def old_call(db: Database, tenant_id: object, days: int) -> object:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "INSERT INTO llm_calls (tenant_id, provider, model, status, created_at) "
            "VALUES (%s, 'offline', 'offline-1', 'completed', now() - make_interval(days => %s))"
            " RETURNING id", [tenant_id, days])
        return (await cur.fetchone())["id"]


async def test_a_worker_runs_the_system_tasks_with_no_one_scheduling_them(
    db: Database, settings: Settings, now: datetime
) -> None:
    ctx = await make_tenant(db)
    agent, run = await agent_and_run(db, ctx.tenant_id)
    next_month = f"{in_month(now, 1):%Y_%m}"
    long_ago, last_month = in_month(now, -30), in_month(now, -1)
    async with db.admin_connection() as conn:
        # A missing month (as after a long outage): the worker makes it before anything.
        await conn.execute(f"DROP TABLE usage_records_{next_month}, events_{next_month}")
        await conn.execute("SELECT usage_records_create_partition(%s)", [long_ago])
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [
            record(at=long_ago), record(at=last_month),
            record(at=now, agent=agent, run=run)])
        cur = await conn.execute(
            "INSERT INTO tasks (tenant_id, run_id, node, agent_id, status, started_at) "
            "VALUES (app_current_tenant(), %s, 'n1', %s, 'running', now()) RETURNING id",
            [run, agent])
        task = (await cur.fetchone())["id"]
        await conn.execute("UPDATE tasks SET status = 'completed', completed_at = now(), "
                           "duration_ms = 250 WHERE id = %s", [task])
    expired_call = await old_call(db, ctx.tenant_id, 3)
    kept_call = await old_call(db, ctx.tenant_id, 0)
    await ops.set_policy(db, "usage_records", 730, "delete", True)
    await ops.set_policy(db, "llm_calls", 1, "delete", True)
    old = f"usage_records_{long_ago:%Y_%m}"
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE system_tasks SET every = '1 second', next_run_at = now()")

    proc = start_worker(cli_env(settings))
    try:
        async def done() -> bool:
            return await scalar(
                db, "SELECT bool_and(last_finished_at IS NOT NULL) FROM system_tasks") is True

        await wait_until(done, 30, "every system task to run once")
        await wait_until(lambda: _view_has(db, agent), 30, "the refreshed view")
        assert await scalar(db, "SELECT to_regclass(%s) IS NOT NULL",
                            f"public.usage_records_{next_month}") is True
        assert await scalar(db, "SELECT to_regclass(%s) IS NOT NULL",
                            f"public.events_{next_month}") is True
        assert await scalar(db, "SELECT to_regclass(%s) IS NULL", f"public.{old}") is True
        assert await scalar(db, "SELECT to_regclass(%s) IS NULL", f"archive.{old}") is True
        assert await scalar(db, "SELECT count(*) FROM llm_calls WHERE id = %s", expired_call) == 0
        assert await scalar(db, "SELECT count(*) FROM llm_calls WHERE id = %s", kept_call) == 1
        assert await scalar(db, "SELECT prompt_tokens FROM billing_periods WHERE tenant_id = %s "
                            "AND period_start = %s", ctx.tenant_id,
                            last_month.date().replace(day=1)) == 100
        errors = await scalar(db, "SELECT array_agg(last_error) FILTER (WHERE last_error IS "
                              "NOT NULL) FROM system_tasks")
        assert errors is None
        # Still running on its own: a second round of the 1-second tasks.
        first = await scalar(db, "SELECT max(last_finished_at) FROM system_tasks")
        await wait_until(lambda: _finished_after(db, first), 30, "a second round")
    finally:
        err = stop(proc)
    assert "Traceback" not in err, err


async def _view_has(db: Database, agent: object) -> bool:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT tasks_completed, avg_duration_ms, llm_calls "
            "FROM analytics.agent_performance_daily WHERE agent_id = %s", [agent])
        rows = await cur.fetchall()
    return rows == [{"tasks_completed": 1, "avg_duration_ms": 250, "llm_calls": 1}]


async def _finished_after(db: Database, first: object) -> bool:
    return await scalar(db, "SELECT bool_and(last_finished_at > %s) FROM system_tasks "
                        "WHERE every = '1 second'", first) is True


async def test_one_claim_per_due_run_among_concurrent_workers(db: Database) -> None:
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE system_tasks SET every = '1 hour', next_run_at = now()")
    async with db.autocommit_connection() as a, db.autocommit_connection() as b:
        async with a.transaction():
            cur = await a.execute("SELECT * FROM system_tasks_claim()")
            first = await cur.fetchone()

            async def claim_b() -> dict:
                async with b.transaction():
                    return await (await b.execute("SELECT * FROM system_tasks_claim()")).fetchone()

            other = asyncio.create_task(claim_b())
            await asyncio.sleep(0.3)
            assert not other.done()  # waits on the rows the first claim holds
        second = await other
        cur = await b.execute("SELECT * FROM system_tasks_claim()")
        third = await cur.fetchone()
    assert sorted(first["names"]) == ["billing_periods", "gateway_cache", "partitions",
                                      "refresh_views", "retention"]
    assert second["names"] == [] and third["names"] == []
    assert 3500 < third["wait_seconds"] <= 3600  # nothing to ask for before the next run


async def test_llm_calls_retention_archives_or_deletes_only_expired_rows(db: Database) -> None:
    ctx = await make_tenant(db)
    await ops.set_policy(db, "usage_records", 36500, "delete", False)
    await ops.set_policy(db, "events", 36500, "delete", False)
    # What other tests left older than a day goes first: the rows counted below are this
    # test's own calls (every other call left is younger than the 5 and 1 days used).
    await ops.set_policy(db, "llm_calls", 1, "delete", True)
    await ops.run_retention(db)
    old, recent = await old_call(db, ctx.tenant_id, 10), await old_call(db, ctx.tenant_id, 2)
    await ops.set_policy(db, "llm_calls", 5, "archive", True)
    done = await ops.run_retention(db)
    assert set(done) == {"llm_calls"} and done["llm_calls"]["rows"] == 1
    assert await scalar(db, "SELECT count(*) FROM archive.llm_calls WHERE id = %s", old) == 1
    assert await scalar(db, "SELECT count(*) FROM llm_calls WHERE id IN (%s, %s)",
                        old, recent) == 1
    await ops.set_policy(db, "llm_calls", 1, "delete", True)
    assert (await ops.run_retention(db))["llm_calls"]["rows"] == 1
    assert await scalar(db, "SELECT count(*) FROM llm_calls WHERE id = %s", recent) == 0
    assert await scalar(db, "SELECT count(*) FROM archive.llm_calls WHERE id = %s", recent) == 0
    policy = await scalar(db, "SELECT last_result FROM retention_policies "
                          "WHERE table_name = 'llm_calls'")
    assert policy["action"] == "delete" and policy["rows"] == 1


async def test_views_hold_each_tenants_project_and_agent_statistics(db: Database) -> None:
    tenants = [await make_tenant(db) for _ in range(2)]
    made = []
    for n, ctx in enumerate(tenants):
        agent, run = await agent_and_run(db, ctx.tenant_id)
        async with db.tenant_connection(ctx.tenant_id) as conn:
            cur = await conn.execute(
                "INSERT INTO projects (tenant_id, name, slug) VALUES (app_current_tenant(), "
                "'Apollo', 'apollo') RETURNING id")
            project = (await cur.fetchone())["id"]
            await conn.execute("UPDATE agents SET project_id = %s WHERE id = %s",
                               [project, agent])
            for status in ("completed", "failed", "completed")[: n + 2]:
                cur = await conn.execute(
                    "INSERT INTO tasks (tenant_id, run_id, node, agent_id, status, started_at) "
                    "VALUES (app_current_tenant(), %s, gen_random_uuid()::text, %s, 'running',"
                    " now()) RETURNING id", [run, agent])
                task = (await cur.fetchone())["id"]
                await conn.execute("UPDATE tasks SET status = %s, completed_at = now(), "
                                   "duration_ms = 100 WHERE id = %s", [status, task])
        made.append((ctx, agent, project))
    assert sorted(await ops.refresh_views(db)) == ["analytics.agent_performance_daily",
                                                   "analytics.project_task_stats"]
    for (ctx, agent, project), (done, failed) in zip(made, [(1, 1), (2, 1)], strict=True):
        async with db.tenant_connection(ctx.tenant_id) as conn:  # the tenant's view only
            cur = await conn.execute("SELECT * FROM project_task_stats")
            [stats] = await cur.fetchall()
            cur = await conn.execute("SELECT * FROM agent_performance_daily")
            [perf] = await cur.fetchall()
        assert (stats["project_id"], stats["project"]) == (project, "Apollo")
        assert (stats["completed_tasks"], stats["failed_tasks"]) == (done, failed)
        assert stats["total_tasks"] == done + failed and stats["avg_duration_ms"] == 100
        assert float(stats["success_rate"]) == round(100 * done / (done + failed), 2)
        assert (perf["agent_id"], perf["agent"]) == (agent, "akira")
        assert (perf["tasks_completed"], perf["tasks_failed"]) == (done, failed)


async def test_events_retention_drops_only_expired_months_and_touches_nothing_else(
    db: Database, now: datetime
) -> None:
    ctx = await make_tenant(db)
    _, run = await agent_and_run(db, ctx.tenant_id)
    old, recent = in_month(now, -30), in_month(now, -2)
    async with db.admin_connection() as conn:
        for at in (old, recent):
            await conn.execute("SELECT events_create_partition(%s)", [at])
        await conn.execute(
            "INSERT INTO events (tenant_id, run_id, seq, type, created_at) "
            "SELECT %s, %s, n, 'agent.output', t FROM unnest(%s::timestamptz[]) "
            "WITH ORDINALITY AS x (t, n)", [ctx.tenant_id, run, [old, recent, now]])
    before = [p["partition"] for p in (await ops.partitions(db))["events"]]
    records = await scalar(db, "SELECT count(*) FROM usage_records")
    archived = await scalar(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'archive'")
    await ops.set_policy(db, "events", 365, "delete", True)
    await ops.set_policy(db, "usage_records", 1, "delete", False)
    await ops.set_policy(db, "llm_calls", 1, "delete", False)
    expired = f"events_{old:%Y_%m}"
    status = await ops.retention_status(db)
    due = {p["table_name"]: p["due"] for p in status["policies"]}
    assert due["events"] == [expired]

    done = await ops.run_retention(db)
    assert done == {"events": {"action": "delete", "retention_days": 365,
                               "partitions": [expired]}}
    after = [p["partition"] for p in (await ops.partitions(db))["events"]]
    assert after == [p for p in before if p != expired]
    assert await scalar(db, "SELECT array_agg(seq ORDER BY seq) FROM events WHERE run_id = %s",
                        run) == [2, 3]
    assert await scalar(db, "SELECT to_regclass(%s)", f"archive.{expired}") is None
    assert await scalar(db, "SELECT count(*) FROM usage_records") == records
    assert await scalar(db, "SELECT count(*) FROM pg_tables WHERE schemaname = 'archive'") \
        == archived
    async with db.admin_connection() as conn:  # dropped, not deleted: nothing dead left
        await conn.execute("SELECT pg_stat_force_next_flush()")
    assert await scalar(db, "SELECT coalesce(sum(n_dead_tup), 0) FROM pg_stat_user_tables "
                        "WHERE relname LIKE 'events%%'") == 0


async def test_a_failed_system_task_is_recorded_shown_and_retried_soon(
    db: Database, cli, monkeypatch
) -> None:
    from agentplane.ops import maintenance

    async def broken(conn: object) -> object:
        raise RuntimeError("archive disk full")

    monkeypatch.setitem(maintenance.TASKS, "retention", broken)
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE system_tasks SET every = '1 day', next_run_at = CASE name "
                           "WHEN 'retention' THEN now() ELSE now() + interval '1 day' END, "
                           "last_error = NULL")
    maintenance._next_check.clear()
    async with db.autocommit_connection() as conn:
        assert await maintenance.run_due(conn) == ["retention"]
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT last_error, next_run_at - now() AS wait, running_since FROM system_tasks "
            "WHERE name = 'retention'")
        row = await cur.fetchone()
    assert row["last_error"] == "RuntimeError: archive disk full"
    assert timedelta(minutes=4) < row["wait"] <= timedelta(minutes=5), "not a day later"
    assert row["running_since"] is None
    shown = await asyncio.to_thread(cli, "ops", "tasks", "status")
    assert shown.returncode == 0 and "archive disk full" in shown.stdout, shown.stderr
