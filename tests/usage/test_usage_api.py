"""Reports, CSV, the summary, agent metrics and alerts over HTTP; `agentplane usage`."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import httpx

from agentplane.db.pool import Database
from tests.conftest import make_tenant
from tests.support.dates import clear_of
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
    months = {f"{t:%Y-%m}" for t in (now, now - timedelta(days=1))}  # two if today is the 1st
    assert lines[0].startswith("period_start,key,calls") and len(lines) == 1 + len(months)
    assert all(",openai," in line for line in lines[1:])
    accepted = await client.get("/v1/usage", params={"by": "provider", "period": "month"},
                                headers={**ctx.headers, "Accept": "text/csv"})
    assert accepted.headers["content-type"].startswith("text/csv") and accepted.text == r.text
    assert "attachment" in accepted.headers["content-disposition"]

    r = await client.get("/v1/usage/summary", headers=ctx.headers)
    this_month = 2 + (f"{now - timedelta(days=1):%Y-%m}" == f"{now:%Y-%m}")
    assert r.status_code == 200 and r.json()["calls"] == this_month


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


def test_cli_usage_and_bad_input(cli) -> None:
    made = cli("tenant", "create", "U", "--slug", "usage-cli", "--owner-email", "o@u.test")
    assert made.returncode == 0, made.stderr
    r = cli("usage", "--by", "model", "--since", "30d", "--tenant", "usage-cli")
    assert r.returncode == 0, r.stderr
    r = cli("usage", "--by", "colour")
    assert r.returncode == 2 and "--by must be one of" in r.stderr and "Traceback" not in r.stderr


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
