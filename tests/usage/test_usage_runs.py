"""The rollup fed by the real runtime: a workflow run by a worker (LLM calls, tool calls,
task completions, the run ending) and a cancelled run leave usage_daily equal to a full
recomputation from the raw tables, in every dimension, and every grouping of GET /v1/usage
and the period summary answer from it."""

from __future__ import annotations

from decimal import Decimal
from typing import Any
from uuid import UUID

import httpx

from agentplane.db.pool import Database
from tests.runtime.helpers import add_agents, agent, settle, tenant, worker

DAG = """
name: usage-chain
tasks:
  review:
    agent: rev
    instruction: "Review: def add(a, b): return a + b"
  summary:
    agent: tester
    instruction: "Summarise {{ tasks.review.output }}"
"""

COLUMNS = ("calls", "prompt_tokens", "completion_tokens", "cached_tokens", "cost_usd",
           "tasks_completed", "tasks_failed", "task_duration_ms", "tool_calls", "tool_failures",
           "runs_completed", "runs_failed", "runs_cancelled")

# Every rollup column of every dimension, recomputed from the facts themselves.
RAW = """
WITH calls AS (
    SELECT r.*, a.project_id FROM usage_records r
    LEFT JOIN agents a ON a.tenant_id = r.tenant_id AND a.id = r.agent_id
    WHERE r.tenant_id = %(t)s
), done AS (
    SELECT t.*, r.user_id, r.api_key_id, a.project_id FROM tasks t
    JOIN runs r ON r.tenant_id = t.tenant_id AND r.id = t.run_id
    LEFT JOIN agents a ON a.tenant_id = t.tenant_id AND a.id = t.agent_id
    WHERE t.tenant_id = %(t)s AND t.status IN ('completed', 'failed')
), facts (dimension, key, day, calls, prompt_tokens, completion_tokens, cached_tokens,
          cost_usd, tasks_completed, tasks_failed, task_duration_ms, tool_calls,
          tool_failures, runs_completed, runs_failed, runs_cancelled) AS (
    SELECT x.d, x.k, usage_utc_day(c.created_at), 1, c.prompt_tokens, c.completion_tokens,
           c.cached_tokens, coalesce(c.cost_usd, 0), 0, 0, 0, 0, 0, 0, 0, 0
    FROM calls c CROSS JOIN LATERAL (VALUES
        ('tenant', ''), ('model', c.provider || '/' || c.model), ('user', c.user_id::text),
        ('api_key', c.api_key_id::text), ('agent', c.agent_id::text),
        ('project', c.project_id::text)) AS x (d, k)
    UNION ALL
    SELECT x.d, x.k, usage_utc_day(t.completed_at), 0, 0, 0, 0, 0,
           (t.status = 'completed')::int, (t.status = 'failed')::int,
           coalesce(t.duration_ms, 0), 0, 0, 0, 0, 0
    FROM done t CROSS JOIN LATERAL (VALUES
        ('tenant', ''), ('agent', t.agent_id::text), ('user', t.user_id::text),
        ('api_key', t.api_key_id::text), ('project', t.project_id::text)) AS x (d, k)
    UNION ALL
    SELECT x.d, x.k, usage_utc_day(e.created_at), 0, 0, 0, 0, 0, 0, 0, 0, 1,
           (NOT e.success)::int, 0, 0, 0
    FROM tool_executions e CROSS JOIN LATERAL (VALUES
        ('tenant', ''), ('agent', e.agent_id::text), ('tool', e.tool_name)) AS x (d, k)
    WHERE e.tenant_id = %(t)s
    UNION ALL
    SELECT 'tenant', '', usage_utc_day(r.completed_at), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
           (r.status = 'completed')::int, (r.status = 'failed')::int,
           (r.status = 'cancelled')::int
    FROM runs r WHERE r.tenant_id = %(t)s AND r.status IN ('completed', 'failed', 'cancelled')
)
SELECT dimension, key, day, {sums} FROM facts WHERE key IS NOT NULL
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""

ROLLED = """
SELECT dimension, key, day, {sums} FROM usage_daily WHERE tenant_id = %(t)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"""


async def rows(db: Database, sql: str, tenant_id: UUID) -> list[tuple[Any, ...]]:
    sums = ", ".join(f"sum({c}) AS {c}" for c in COLUMNS)
    async with db.admin_connection() as conn:
        cur = await conn.execute(sql.replace("{sums}", sums), {"t": tenant_id})
        return [tuple(r.values()) for r in await cur.fetchall()]


async def test_runs_keep_the_rollup_equal_to_the_raw_tables(db, settings, client) -> None:
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("rev", tools=["text_stats"]), agent("tester"))
    async with db.tenant_connection(ctx.tenant_id) as conn:
        cur = await conn.execute(
            "INSERT INTO projects (tenant_id, name, slug) VALUES (app_current_tenant(), "
            "'Apollo', 'apollo') RETURNING id")
        project = (await cur.fetchone())["id"]
        await conn.execute("UPDATE agents SET project_id = %s WHERE slug = 'rev'", [project])
    r = await client.post("/v1/workflows", json={"source": DAG}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    made = []
    for _ in range(2):
        r = await client.post("/v1/runs", json={"workflow": "usage-chain"}, headers=ctx.headers)
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
    r = await client.post(f"/v1/runs/{made[1]}/cancel", headers=ctx.headers)
    assert r.status_code == 200, r.text
    async with worker(db, settings):
        done = await settle(client, ctx, made[0])
    assert done["status"] == "completed", done
    assert (await settle(client, ctx, made[1]))["status"] == "cancelled"

    raw = await rows(db, RAW, ctx.tenant_id)
    assert await rows(db, ROLLED, ctx.tenant_id) == raw
    found = {row[0] for row in raw}
    assert found == {"tenant", "model", "user", "api_key", "agent", "project", "tool"}
    [tenant_row] = [row for row in raw if row[0] == "tenant"]
    totals = dict(zip(COLUMNS, tenant_row[3:], strict=True))
    assert totals["tasks_completed"] == 2 and totals["tool_calls"] >= 1
    assert (totals["runs_completed"], totals["runs_cancelled"]) == (1, 1)

    # Every grouping of the report adds up to the same totals, from the rollup.
    for by in ("model", "provider", "agent", "user", "key", "project", "tool"):
        r = await client.get("/v1/usage", params={"by": by, "period": "week", "since": "7d"},
                             headers=ctx.headers)
        assert r.status_code == 200, (by, r.text)
        got = r.json()["rows"]
        assert got and all(row["key"] for row in got), by
        if by in ("model", "provider", "agent", "user", "key"):  # every call has one
            assert sum(row["calls"] for row in got) == totals["calls"], by
            assert sum(Decimal(row["cost_usd"]) for row in got) == totals["cost_usd"], by
        if by in ("agent", "user", "key"):  # every task has one
            assert sum(row["tasks_completed"] for row in got) == 2, by
    r = await client.get("/v1/usage", params={"by": "tool"}, headers=ctx.headers)
    assert {row["key"] for row in r.json()["rows"]} == {"text_stats"}
    r = await client.get("/v1/usage", params={"by": "project"}, headers=ctx.headers)
    assert [row["key"] for row in r.json()["rows"]] == [str(project)]
    assert r.json()["rows"][0]["tasks_completed"] == 1  # rev's task only

    r = await client.get("/v1/usage/summary", headers=ctx.headers)
    summary = r.json()
    tokens = totals["prompt_tokens"] + totals["completion_tokens"]
    assert (summary["tokens_used"], summary["calls"]) == (tokens, totals["calls"])
    assert (summary["runs_completed"], summary["runs_cancelled"]) == (1, 1)
    assert summary["tasks_completed"] == 2 and summary["token_limit"] == 100_000_000
    assert summary["percent_used"] == round(100 * tokens / 100_000_000, 2)


async def test_usage_needs_its_scope(db, client: httpx.AsyncClient) -> None:
    from tests.conftest import make_tenant

    blind = await make_tenant(db, scopes=["runs:read"])
    for path in ("/v1/usage", "/v1/usage/summary", "/v1/usage/alerts"):
        r = await client.get(path, headers=blind.headers)
        assert r.status_code == 403, path
        assert r.json()["missing_scopes"] == ["usage:read"]
