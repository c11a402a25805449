"""Reports, CSV, the summary, agent metrics and alerts over HTTP; retention and the CLI."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import httpx

from agentplane.db.pool import Database
from agentplane.ops import service as ops
from tests.conftest import make_tenant
from tests.support.dates import clear_of, in_month
from tests.usage.helpers import agent_and_run, insert_records, record


async def test_report_by_model_per_day_and_csv(
    db: Database, client: httpx.AsyncClient, now: datetime
) -> None:
    ctx = await make_tenant(db)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [
            record(at=now, model="gpt-4o", prompt=100, cached=75, cost=Decimal("0.5")),
            record(at=now, model="gpt-4o", prompt=50, cost=Decimal("0.25")),
            record(at=now - timedelta(days=1), model="gpt-4o-mini", prompt=10, cost=None),
        ])
    other = await make_tenant(db)  # another tenant's usage never shows
    async with db.tenant_connection(other.tenant_id) as conn:
        await insert_records(conn, [record(at=now, model="gpt-4o", prompt=999)])

    r = await client.get("/v1/usage", params={"by": "model", "since": "7d"}, headers=ctx.headers)
    assert r.status_code == 200, r.text
    rows = {(x["period_start"], x["key"]): x for x in r.json()["rows"]}
    today = now.date().isoformat()
    assert rows[(today, "openai/gpt-4o")]["prompt_tokens"] == 150
    assert Decimal(rows[(today, "openai/gpt-4o")]["cost_usd"]) == Decimal("0.75")
    assert rows[(today, "openai/gpt-4o")]["cache_hit_rate"] == 0.5  # 75 of 150 prompt tokens
    yesterday = (now - timedelta(days=1)).date().isoformat()
    assert rows[(yesterday, "openai/gpt-4o-mini")]["unpriced_calls"] == 1

    r = await client.get("/v1/usage", params={"by": "provider", "period": "month", "format": "csv"},
                         headers=ctx.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("period_start,key,calls") and len(lines) >= 2
    assert all(",openai," in line for line in lines[1:])
    accepted = await client.get("/v1/usage", params={"by": "provider", "period": "month"},
                                headers={**ctx.headers, "Accept": "text/csv"})
    assert accepted.headers["content-type"].startswith("text/csv") and accepted.text == r.text
    assert "attachment" in accepted.headers["content-disposition"]

    r = await client.get("/v1/usage/summary", headers=ctx.headers)
    assert r.status_code == 200 and r.json()["calls"] >= 2


async def test_bad_report_parameters_are_422_problems(
    db: Database, client: httpx.AsyncClient
) -> None:
    ctx = await make_tenant(db)
    for params in ({"by": "colour"}, {"period": "year"}, {"since": "yesterday"},
                   {"since": "2025-02-01", "until": "2025-01-01"}, {"value": "x"},
                   {"format": "xml"}):
        r = await client.get("/v1/usage", params=params, headers=ctx.headers)
        assert r.status_code == 422, (params, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")


async def test_agent_metrics(db: Database, client: httpx.AsyncClient) -> None:
    now = await clear_of(db, "day")  # the metrics of one day
    ctx = await make_tenant(db)
    agent, run = await agent_and_run(db, ctx.tenant_id)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=now, agent=agent, run=run, latency=40)])
        for status in ("completed", "failed", "completed"):
            cur = await conn.execute(
                "INSERT INTO tasks (tenant_id, run_id, node, agent_id, status, started_at) "
                "VALUES (app_current_tenant(), %s, gen_random_uuid()::text, %s, 'running', now())"
                " RETURNING id", [run, agent])
            tid = (await cur.fetchone())["id"]
            await conn.execute("UPDATE tasks SET status = %s, completed_at = now(), "
                               "duration_ms = 300 WHERE id = %s", [status, tid])
    r = await client.get("/v1/usage/agents/akira/metrics", headers=ctx.headers)
    assert r.status_code == 200, r.text
    [day] = r.json()["rows"]
    assert (day["tasks_completed"], day["tasks_failed"]) == (2, 1)
    assert day["success_rate"] == round(2 / 3, 4) and day["avg_task_duration_ms"] == 300
    assert day["error_rate"] == round(1 / 3, 4)
    assert day["avg_llm_latency_ms"] == 40
    missing = await client.get(f"/v1/usage/agents/{agent}/metrics", headers=ctx.headers)
    assert missing.status_code == 404


async def test_alert_fires_once_per_period_with_event_and_audit(
    db: Database, client: httpx.AsyncClient
) -> None:
    now = await clear_of(db, "day")  # a daily alert
    ctx = await make_tenant(db)
    _, run = await agent_and_run(db, ctx.tenant_id)
    r = await client.post("/v1/usage/alerts", headers=ctx.headers, json={
        "name": "daily tokens", "metric": "tokens", "period": "day", "threshold": 1000})
    assert r.status_code == 201, r.text
    alert = r.json()["id"]
    bad = await client.post("/v1/usage/alerts", headers=ctx.headers, json={
        "name": "x", "scope": "user", "threshold": 5})
    assert bad.status_code == 422
    dup = await client.post("/v1/usage/alerts", headers=ctx.headers, json={
        "name": "daily tokens", "threshold": 5})
    assert dup.status_code == 409

    for _ in range(3):  # 600 tokens, then 1200 (crosses), then 1800: one firing
        async with db.tenant_connection(ctx.tenant_id) as conn:
            await insert_records(conn, [record(at=now, run=run, prompt=500, completion=100)])
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM audit_logs WHERE tenant_id = %s "
                                 "AND event_type = 'budget_warning'", [ctx.tenant_id])
        assert (await cur.fetchone())["n"] == 1
        cur = await conn.execute("SELECT payload FROM events WHERE run_id = %s "
                                 "AND type = 'budget.warning'", [run])
        events = await cur.fetchall()
    assert len(events) == 1 and events[0]["payload"]["value"] == 1200
    r = await client.get(f"/v1/usage/alerts/{alert}/firings", headers=ctx.headers)
    [firing] = r.json()
    assert Decimal(firing["value"]) == 1200 and firing["run_id"] == str(run)

    r = await client.patch(f"/v1/usage/alerts/{alert}", headers=ctx.headers,
                           json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert (await client.delete(f"/v1/usage/alerts/{alert}", headers=ctx.headers)).status_code \
        == 204
    assert (await client.get(f"/v1/usage/alerts/{alert}", headers=ctx.headers)).status_code \
        == 404


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
    assert await ops.close_billing_periods(db) >= 1
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


def test_cli_usage_ops_and_bad_input(cli) -> None:
    made = cli("tenant", "create", "U", "--slug", "usage-cli", "--owner-email", "o@u.test")
    assert made.returncode == 0, made.stderr
    r = cli("usage", "--by", "model", "--since", "30d", "--tenant", "usage-cli")
    assert r.returncode == 0, r.stderr
    r = cli("usage", "--by", "colour")
    assert r.returncode == 2 and "--by must be one of" in r.stderr and "Traceback" not in r.stderr
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


async def test_cli_usage_is_the_tenants_report_as_a_table_or_csv(
    db: Database, cli, now: datetime
) -> None:
    import asyncio
    import csv
    import io

    ctx = await make_tenant(db)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [
            record(at=now, model="gpt-4o", prompt=1200, completion=34, cost=Decimal("0.5")),
            record(at=now - timedelta(days=3), model="gpt-4o-mini", prompt=7, completion=0),
            record(at=now - timedelta(days=45), model="o4-mini", prompt=5, completion=0),
        ])
    env = {"AGENTPLANE_TENANT": ctx.slug, "COLUMNS": "200"}
    shown = await asyncio.to_thread(cli, "usage", "--by", "model", "--since", "30d", **env)
    assert shown.returncode == 0, shown.stderr
    lines = {line.split("│")[2].strip(): line for line in shown.stdout.splitlines()
             if line.count("│") > 3 and "openai/" in line}
    assert set(lines) == {"openai/gpt-4o", "openai/gpt-4o-mini"}, shown.stdout  # not 45 days
    assert "1234" in lines["openai/gpt-4o"] and "0.5000" in lines["openai/gpt-4o"]
    exported = await asyncio.to_thread(cli, "usage", "--by", "model", "--period", "day",
                                       "--since", "60d", "--csv", **env)
    assert exported.returncode == 0, exported.stderr
    got = {(r["period_start"], r["key"]): r for r in csv.DictReader(io.StringIO(exported.stdout))}
    assert got[(str((now - timedelta(days=45)).date()), "openai/o4-mini")]["total_tokens"] == "5"
    assert got[(str(now.date()), "openai/gpt-4o")]["cost_usd"].startswith("0.5")
    assert len(got) == 3
    bad = await asyncio.to_thread(cli, "usage", "--since", "soon", **env)
    assert bad.returncode == 2 and "is not a date" in bad.stderr


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
