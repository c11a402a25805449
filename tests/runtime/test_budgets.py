"""Budgets in runs: every LLM call of a task reserves its budget before it goes out and
settles to what it used; a budget that cannot admit a call fails the task naming the
budget, with nothing overspent."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentplane.db.pool import Database
from tests.runtime.helpers import add_agents, agent, settle, tenant, worker


async def session(client, ctx, budget: int) -> str:
    r = await client.post("/v1/sessions", json={"token_budget": budget}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def one(db: Database, sql: str, *params: Any) -> dict[str, Any]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(sql, list(params))
        return await cur.fetchone()


async def event_types(client, ctx, run_id: str) -> list[str]:
    r = await client.get(f"/v1/runs/{run_id}/events?limit=500", headers=ctx.headers)
    assert r.status_code == 200, r.text
    return [e["type"] for e in r.json()["events"]]


async def test_a_runs_calls_settle_to_what_they_used(db, settings, client) -> None:
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("ana"), agent("calc", tools=["calculator"]))
    sid = await session(client, ctx, 100_000)
    definition = {
        "name": "budgeted",
        "tasks": {
            "a": {"agent": "ana", "instruction": "Summarise the plan"},
            "b": {"agent": "calc", "instruction": "Compute 6*7", "depends_on": ["a"]},
        },
    }
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    r = await client.post(
        "/v1/runs", json={"workflow": "budgeted", "session_id": sid}, headers=ctx.headers
    )
    assert r.status_code == 201, r.text
    async with worker(db, settings):
        run = await settle(client, ctx, r.json()["id"])
    assert run["status"] == "completed", run
    calls = await one(
        db,
        "SELECT count(*) AS n, sum(total_tokens) AS tokens FROM llm_calls "
        "WHERE run_id = %s AND status = 'completed'",
        UUID(run["id"]),
    )
    assert calls["n"] == 3  # ana once; calc asks for its tool, then answers
    s = await one(db, "SELECT * FROM sessions WHERE id = %s", UUID(sid))
    assert s["tokens_reserved"] == 0 and s["request_count"] == calls["n"]
    assert s["tokens_used"] == calls["tokens"] == run["total_tokens"]
    held = await one(
        db, "SELECT count(*) AS n FROM budget_reservations WHERE session_id = %s", UUID(sid)
    )
    assert held["n"] == 0
    t = await one(db, "SELECT tokens_reserved FROM tenants WHERE id = %s", ctx.tenant_id)
    assert t["tokens_reserved"] == 0
    # The trail: each call announced before it goes out and reported after; calc's
    # answer comes as its output once its tool ran.
    types = await event_types(client, ctx, run["id"])
    assert types.count("llm.call_started") == types.count("llm.call_completed") == calls["n"]
    assert types.count("agent.output") == 2
    calc = types[types.index("task.completed") + 1 :]
    order = [t for t in calc if t in ("llm.call_started", "tool.called", "agent.output")]
    assert order == ["llm.call_started", "tool.called", "llm.call_started", "agent.output"]
    assert "budget.exceeded" not in types


async def test_a_budget_too_small_for_the_first_call_fails_the_task(db, settings, client) -> None:
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("ana"))
    sid = await session(client, ctx, 50)  # less than the agent's max_tokens alone
    r = await client.post(
        "/v1/runs",
        json={"query": "Plan the release", "mode": "SIMPLE", "session_id": sid},
        headers=ctx.headers,
    )
    assert r.status_code == 201, r.text
    async with worker(db, settings):
        run = await settle(client, ctx, r.json()["id"])
    assert run["status"] == "failed"
    assert "session token budget exceeded" in run["error"]
    s = await one(db, "SELECT * FROM sessions WHERE id = %s", UUID(sid))
    assert (s["tokens_used"], s["tokens_reserved"], s["request_count"]) == (0, 0, 0)
    calls = await one(db, "SELECT count(*) AS n FROM llm_calls WHERE run_id = %s", UUID(run["id"]))
    assert calls["n"] == 0
    executions = await one(
        db,
        "SELECT count(*) AS n, bool_and(state = 'FAILED') AS failed FROM agent_executions "
        "WHERE run_id = %s",
        UUID(run["id"]),
    )
    assert executions["n"] == 1 and executions["failed"]  # its one attempt, failed
    types = await event_types(client, ctx, run["id"])
    assert "budget.exceeded" in types and "llm.call_completed" not in types
    assert types.index("llm.call_started") < types.index("budget.exceeded") < types.index(
        "task.failed"
    )
