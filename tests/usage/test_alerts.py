"""Alerts: percentages of a key's budget, a daily cost, each announced once per period by
NOTIFY, an audit entry and (when a run made the call) a budget.warning event, also from a
real LLM call; alert CRUD refuses bad input and other tenants' alerts."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from uuid import uuid4

import httpx
import psycopg

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext
from tests.conftest import make_tenant
from tests.llm.helpers import MESSAGES
from tests.support.dates import clear_of
from tests.usage.helpers import agent_and_run, insert_records, record


async def scalar(db: Database, sql: str, *params: object) -> object:
    async with db.admin_connection() as conn:
        cur = await conn.execute(sql, list(params))
        return next(iter((await cur.fetchone()).values()))


async def test_percent_and_cost_alerts_fire_once_each_and_are_announced(
    db: Database, client: httpx.AsyncClient
) -> None:
    now = await clear_of(db, "day")  # a daily cost, a budget of the month
    ctx = await make_tenant(db)
    _, run = await agent_and_run(db, ctx.tenant_id)
    h = ctx.headers
    r = await client.put(f"/v1/api-keys/{ctx.api_key_id}/budget", headers=h,
                         json={"token_budget": 1000})
    assert r.status_code == 200, r.text
    made = {}
    for body in (
        {"name": "key 80%", "scope": "api_key", "subject_id": str(ctx.api_key_id),
         "unit": "percent", "threshold": 80},
        {"name": "key 100%", "scope": "api_key", "subject_id": str(ctx.api_key_id),
         "unit": "percent", "threshold": 100},
        {"name": "daily cost", "metric": "cost_usd", "period": "day", "threshold": "0.002"},
    ):
        r = await client.post("/v1/usage/alerts", headers=h, json=body)
        assert r.status_code == 201, r.text
        made[body["name"]] = r.json()["id"]
    listed = (await client.get("/v1/usage/alerts", headers=h)).json()
    assert sorted(a["name"] for a in listed) == ["daily cost", "key 100%", "key 80%"]

    listener = await psycopg.AsyncConnection.connect(db.endpoints.app, autocommit=True)
    notes: list[dict] = []

    async def collect() -> None:
        async for note in listener.notifies():
            notes.append(json.loads(note.payload))

    try:
        await listener.execute("LISTEN agentplane_usage_alerts")
        collecting = asyncio.create_task(collect())
        fired_after = []
        # 500 tokens (50%), 900 (90%: 80% fires; 0.002 USD: the cost fires), 1100 (100%
        # fires), 1300 (nothing new).
        for prompt, with_run in ((400, False), (300, True), (100, False), (100, False)):
            async with db.tenant_connection(ctx.tenant_id) as conn:
                await insert_records(conn, [record(at=now, key=ctx.api_key_id,
                                                   run=run if with_run else None,
                                                   prompt=prompt, completion=100,
                                                   cost=Decimal("0.001"))])
            await asyncio.sleep(0.2)
            fired_after.append(sorted(n["name"] for n in notes))
        collecting.cancel()
    finally:
        await listener.close()
    assert fired_after == [
        [], ["daily cost", "key 80%"], ["daily cost", "key 100%", "key 80%"],
        ["daily cost", "key 100%", "key 80%"],
    ]
    by_name = {n["name"]: n for n in notes}
    assert by_name["key 80%"]["limit"] == 800 and by_name["key 80%"]["value"] == 900
    assert by_name["key 100%"]["value"] == 1100
    assert Decimal(str(by_name["daily cost"]["value"])) == Decimal("0.002")
    assert all(n["tenant_id"] == str(ctx.tenant_id) for n in notes)

    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT resource_id FROM audit_logs WHERE tenant_id = %s "
            "AND event_type = 'budget_warning' ORDER BY resource_id", [ctx.tenant_id])
        assert [r["resource_id"] for r in await cur.fetchall()] == sorted(made.values())
        # Only the call made by a run appends to that run's log (two alerts crossed then).
        cur = await conn.execute(
            "SELECT seq, payload->>'name' AS name FROM events WHERE run_id = %s "
            "AND type = 'budget.warning' ORDER BY seq", [run])
        assert [(r["seq"], r["name"]) for r in await cur.fetchall()] in (
            [(1, "daily cost"), (2, "key 80%")], [(1, "key 80%"), (2, "daily cost")])
    r = await client.get(f"/v1/usage/alerts/{made['key 100%']}/firings", headers=h)
    [firing] = r.json()
    assert (Decimal(firing["value"]), Decimal(firing["threshold"])) == (1100, 1000)
    assert firing["run_id"] is None
    summary = (await client.get("/v1/usage/summary", headers=h)).json()
    assert len(summary["alerts_fired"]) == 3


async def test_alert_crud_refuses_bad_input_and_other_tenants(
    db: Database, client: httpx.AsyncClient
) -> None:
    ctx, other = await make_tenant(db), await make_tenant(db)
    r = await client.post("/v1/usage/alerts", headers=other.headers,
                          json={"name": "theirs", "threshold": 10})
    theirs = r.json()["id"]
    r = await client.post("/v1/usage/alerts", headers=ctx.headers,
                          json={"name": "mine", "unit": "percent", "threshold": 80})
    assert r.status_code == 201, r.text
    mine = r.json()["id"]
    for body in (
        {"name": "u", "scope": "user", "subject_id": str(other.user_id), "threshold": 5},
        {"name": "k", "scope": "api_key", "subject_id": str(other.api_key_id), "threshold": 5},
        {"name": "k", "scope": "api_key", "subject_id": str(uuid4()), "threshold": 5},
        {"name": "p", "metric": "cost_usd", "unit": "percent", "threshold": 5},
        {"name": "p", "unit": "percent", "threshold": 1001},
        {"name": "t", "threshold": 0},
        {"name": "", "threshold": 5},
        {"name": "x", "threshold": 5, "colour": "red"},
    ):
        r = await client.post("/v1/usage/alerts", headers=ctx.headers, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = await client.patch(f"/v1/usage/alerts/{mine}", headers=ctx.headers,
                           json={"threshold": 1001})
    assert r.status_code == 422, r.text
    for method, path in (("GET", ""), ("GET", "/firings"), ("PATCH", ""), ("DELETE", "")):
        for alert in (theirs, uuid4()):
            r = await client.request(method, f"/v1/usage/alerts/{alert}{path}",
                                     headers=ctx.headers,
                                     json={"enabled": False} if method == "PATCH" else None)
            assert r.status_code == 404, (method, path, r.text)
    assert [a["name"] for a in (await client.get("/v1/usage/alerts",
                                                 headers=ctx.headers)).json()] == ["mine"]
    viewer = await make_tenant(db, role="viewer")
    r = await client.post("/v1/usage/alerts", headers=viewer.headers,
                          json={"name": "v", "threshold": 5})
    assert r.status_code == 403, r.text
    # Nothing changed: their alert is as it was, mine keeps its threshold.
    r = await client.get(f"/v1/usage/alerts/{theirs}", headers=other.headers)
    assert r.json()["enabled"] is True
    r = await client.get(f"/v1/usage/alerts/{mine}", headers=ctx.headers)
    assert Decimal(r.json()["threshold"]) == 80


async def test_an_alert_fires_from_a_real_llm_call(db: Database, settings: Settings) -> None:
    ctx = await make_tenant(db)
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE tenants SET token_limit = 100000000 WHERE id = %s",
                           [ctx.tenant_id])
    _, run = await agent_and_run(db, ctx.tenant_id)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        cur = await conn.execute(
            "INSERT INTO usage_alerts (tenant_id, name, scope, subject_id, metric, period, "
            "threshold) VALUES (app_current_tenant(), 'any use', 'user', %s, 'tokens', 'day', 1)"
            " RETURNING id", [ctx.user_id])
        alert = (await cur.fetchone())["id"]
    llm = LLM(db, settings)
    call = CallContext(tenant_id=ctx.tenant_id, user_id=ctx.user_id, run_id=run)
    for _ in range(2):  # crosses on the first call; fires once in the day
        await llm.complete(call, ChatRequest(messages=MESSAGES))
    assert await scalar(db, "SELECT count(*) FROM usage_alert_firings WHERE alert_id = %s",
                        alert) == 1
    assert await scalar(db, "SELECT count(*) FROM audit_logs WHERE tenant_id = %s "
                        "AND event_type = 'budget_warning'", ctx.tenant_id) == 1
    payload = await scalar(db, "SELECT payload FROM events WHERE run_id = %s "
                           "AND type = 'budget.warning'", run)
    assert payload["alert_id"] == str(alert) and payload["value"] > 0
