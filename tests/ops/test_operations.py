"""What the operator runs (agentplane.ops.service and `agentplane ops`): retention of
whole monthly partitions, billing periods closed once, partitions, system tasks and the
database's health."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import httpx

from agentplane.db.pool import Database
from agentplane.ops import service as ops
from tests.conftest import make_tenant
from tests.support.dates import in_month
from tests.usage.helpers import agent_and_run, insert_records, record


async def test_retention_retires_exactly_the_expired_partitions(
    db: Database, now: datetime
) -> None:
    ctx = await make_tenant(db)
    async with db.admin_connection() as conn:
        for months in (30, 26, 2):
            await conn.execute("SELECT usage_records_create_partition(now() - make_interval("
                               "months => %s))", [months])
    # One row in each partition made: placed by calendar months, as the partitions are.
    old, older, recent = (in_month(now, -m, day=15) for m in (26, 30, 2))
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=t) for t in (old, older, recent, now)])
    before = await ops.partitions(db)
    names = [p["partition"] for p in before["usage_records"]]
    await ops.set_policy(db, "usage_records", 365 * 2, "archive", True)
    await ops.set_policy(db, "events", 36500, "delete", True)
    await ops.set_policy(db, "llm_calls", 36500, "delete", True)
    expired = {f"usage_records_{t:%Y_%m}" for t in (old, older)}
    status = await ops.retention_status(db)
    due = {p["table_name"]: set(p["due"]) for p in status["policies"]}
    assert due["usage_records"] == expired and due["events"] == set()

    done = await ops.run_retention(db)
    assert set(done["usage_records"]["partitions"]) == expired
    after = [p["partition"] for p in (await ops.partitions(db))["usage_records"]]
    assert after == [n for n in names if n not in expired]
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM usage_records WHERE tenant_id = %s",
                                 [ctx.tenant_id])
        assert (await cur.fetchone())["n"] == 2
        for name in expired:  # archived whole, rows and all
            cur = await conn.execute(f"SELECT count(*) AS n FROM archive.{name}")
            assert (await cur.fetchone())["n"] == 1
        cur = await conn.execute("SELECT sum(calls) AS n FROM usage_daily WHERE tenant_id = %s "
                                 "AND dimension = 'tenant'", [ctx.tenant_id])
        assert (await cur.fetchone())["n"] == 4  # the rollup keeps the history
    again = await ops.run_retention(db)
    assert again["usage_records"]["partitions"] == []


async def test_billing_periods_close_past_months_once(
    db: Database, client: httpx.AsyncClient, now: datetime
) -> None:
    await ops.close_billing_periods(db)  # the months other tests left: the count is this test's
    ctx = await make_tenant(db)
    last_month = in_month(now, -1, day=10)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=last_month, prompt=7, completion=3,
                                           cost=Decimal("0.25")),
                                    record(at=now, prompt=1)])
    runs = [(await agent_and_run(db, ctx.tenant_id, slug=f"a{i}"))[1] for i in range(3)]
    async with db.admin_connection() as conn:  # runs that ended last month, one each way
        for run, status in zip(runs, ("completed", "failed", "cancelled"), strict=True):
            await conn.execute("UPDATE runs SET status = %s, completed_at = %s WHERE id = %s",
                               [status, last_month, run])
    assert await ops.close_billing_periods(db) == 1  # this tenant's last month, no other
    assert await ops.close_billing_periods(db) == 0
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT * FROM billing_periods WHERE tenant_id = %s",
                                 [ctx.tenant_id])
        [period] = await cur.fetchall()
    assert period["prompt_tokens"] == 7 and period["status"] == "closed"
    assert (period["runs_completed"], period["runs_failed"], period["runs_cancelled"]) == (1, 1, 1)
    assert period["period_start"] == last_month.date().replace(day=1)
    r = await client.get("/v1/usage/periods", headers=ctx.headers)
    assert r.status_code == 200, r.text
    [shown] = r.json()
    assert (shown["period_start"], shown["calls"], Decimal(shown["cost_usd"])) == (
        str(period["period_start"]), 1, Decimal("0.25"))
    assert (shown["runs_completed"], shown["runs_failed"], shown["runs_cancelled"]) == (1, 1, 1)
    assert (await client.get("/v1/usage/periods", params={"limit": 0},
                             headers=ctx.headers)).status_code == 422


def test_cli_ops_partitions_retention_and_tasks(cli) -> None:
    r = cli("ops", "partitions")
    assert r.returncode == 0 and "usage_records_" in r.stdout, r.stderr
    r = cli("ops", "retention", "status")
    assert r.returncode == 0 and "usage_records" in r.stdout, r.stderr
    r = cli("ops", "retention", "set", "jobs", "--days", "3")
    assert r.returncode == 2 and "no retention for 'jobs'" in r.stderr
    r = cli("ops", "health")
    assert r.returncode == 0 and "largest tables" in r.stdout, r.stderr
    r = cli("ops", "retention", "run")
    assert r.returncode == 0 and "usage_records: archive after 730 days" in r.stdout, r.stderr
    r = cli("ops", "tasks", "set", "refresh_views", "--every", "120")
    assert r.returncode == 0, r.stderr
    r = cli("ops", "tasks", "status")
    assert r.returncode == 0 and "refresh_views" in r.stdout and "0:02:00" in r.stdout, r.stderr
    r = cli("ops", "tasks", "set", "vacuum", "--every", "60")
    assert r.returncode == 2 and "no system task 'vacuum'" in r.stderr
    assert "Traceback" not in r.stderr
    r = cli("ops", "tasks", "set", "retention", "--every", "0")
    assert r.returncode == 2 and "between 1 second" in r.stderr


def test_cli_ops_health_reports_sizes_indexes_and_bloat(cli) -> None:
    import json

    r = cli("ops", "health", "--json")
    assert r.returncode == 0, r.stderr
    found = json.loads(r.stdout)
    sizes = [t["bytes"] for t in found["tables"]]
    # The largest tables, partitioned or not, each with its size (indexes included).
    assert len(sizes) == 15 and all(sizes) and sizes == sorted(sizes, reverse=True), sizes
    assert "public.usage_records" in {t["table"] for t in found["tables"]}
    assert {"table", "index", "scans", "bytes", "unique"} <= set(found["indexes"][0])
    assert {"table", "live", "dead", "dead_pct"} <= set(found["bloat"][0])
    # The embedded server has no pg_stat_statements: said so, not an error.
    assert found["slow_statements"] is None
    r = cli("ops", "health")
    assert "pg_stat_statements is not installed" in r.stdout
