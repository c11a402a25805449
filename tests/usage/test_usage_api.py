"""Reports, CSV, the summary, agent metrics and alerts over HTTP; retention and the CLI."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from agentplane.db.pool import Database
from agentplane.ops import service as ops
from tests.conftest import make_tenant
from tests.usage.helpers import agent_and_run, insert_records, record

NOW = datetime.now(UTC)


async def test_report_by_model_per_day_and_csv(db: Database, client: httpx.AsyncClient) -> None:
    ctx = await make_tenant(db)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [
            record(at=NOW, model="gpt-4o", prompt=100, cost=Decimal("0.5")),
            record(at=NOW, model="gpt-4o", prompt=50, cost=Decimal("0.25")),
            record(at=NOW - timedelta(days=1), model="gpt-4o-mini", prompt=10, cost=None),
        ])
    other = await make_tenant(db)  # another tenant's usage never shows
    async with db.tenant_connection(other.tenant_id) as conn:
        await insert_records(conn, [record(at=NOW, model="gpt-4o", prompt=999)])

    r = await client.get("/v1/usage", params={"by": "model", "since": "7d"}, headers=ctx.headers)
    assert r.status_code == 200, r.text
    rows = {(x["period_start"], x["key"]): x for x in r.json()["rows"]}
    today = NOW.date().isoformat()
    assert rows[(today, "openai/gpt-4o")]["prompt_tokens"] == 150
    assert Decimal(rows[(today, "openai/gpt-4o")]["cost_usd"]) == Decimal("0.75")
    yesterday = (NOW - timedelta(days=1)).date().isoformat()
    assert rows[(yesterday, "openai/gpt-4o-mini")]["unpriced_calls"] == 1

    r = await client.get("/v1/usage", params={"by": "provider", "period": "month", "format": "csv"},
                         headers=ctx.headers)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    lines = r.text.strip().splitlines()
    assert lines[0].startswith("period_start,key,calls") and len(lines) >= 2
    assert all(",openai," in line for line in lines[1:])

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
    ctx = await make_tenant(db)
    agent, run = await agent_and_run(db, ctx.tenant_id)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=NOW, agent=agent, run=run, latency=40)])
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
    assert day["avg_llm_latency_ms"] == 40
    missing = await client.get(f"/v1/usage/agents/{agent}/metrics", headers=ctx.headers)
    assert missing.status_code == 404


async def test_alert_fires_once_per_period_with_event_and_audit(
    db: Database, client: httpx.AsyncClient
) -> None:
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
            await insert_records(conn, [record(at=NOW, run=run, prompt=500, completion=100)])
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM audit_logs WHERE tenant_id = %s "
                                 "AND event_type = 'budget_warning'", [ctx.tenant_id])
        assert (await cur.fetchone())["n"] == 1
        cur = await conn.execute("SELECT payload FROM events WHERE run_id = %s "
                                 "AND type = 'budget.warning'", [run])
        events = await cur.fetchall()
    assert len(events) == 1 and events[0]["payload"]["value"] == 1200
    r = await client.get(f"/v1/usage/alerts/{alert}/firings", headers=ctx.headers)
    assert [f["value"] for f in r.json()] == ["1200.0000000000"] or len(r.json()) == 1

    r = await client.patch(f"/v1/usage/alerts/{alert}", headers=ctx.headers,
                           json={"enabled": False})
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert (await client.delete(f"/v1/usage/alerts/{alert}", headers=ctx.headers)).status_code \
        == 204
    assert (await client.get(f"/v1/usage/alerts/{alert}", headers=ctx.headers)).status_code \
        == 404


async def test_retention_retires_exactly_the_expired_partitions(db: Database) -> None:
    ctx = await make_tenant(db)
    async with db.admin_connection() as conn:
        for months in (30, 26, 2):
            await conn.execute("SELECT usage_records_create_partition(now() - make_interval("
                               "months => %s))", [months])
    old, older, recent = (NOW - timedelta(days=d) for d in (26 * 31, 30 * 31, 62))
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=t) for t in (old, older, recent, NOW)])
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


async def test_billing_periods_close_past_months_once(db: Database) -> None:
    ctx = await make_tenant(db)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=NOW - timedelta(days=40), prompt=7, completion=3),
                                    record(at=NOW, prompt=1)])
    assert await ops.close_billing_periods(db) >= 1
    assert await ops.close_billing_periods(db) == 0
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT * FROM billing_periods WHERE tenant_id = %s",
                                 [ctx.tenant_id])
        [period] = await cur.fetchall()
    assert period["prompt_tokens"] == 7 and period["status"] == "closed"
    await ops.refresh_views(db)


def test_cli_usage_ops_and_bad_input(cli) -> None:
    r = cli("usage", "--by", "model", "--since", "30d")
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
