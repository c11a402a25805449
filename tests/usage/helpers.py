"""Shared set-up of the usage tests: raw facts written straight to the tables, so the
triggers under test are what maintains the rollup."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from agentplane.db.pool import Database

DIMENSIONS = {
    "tenant": "''",
    "user": "user_id::text",
    "api_key": "api_key_id::text",
    "agent": "agent_id::text",
    "model": "provider || '/' || model",
}


async def agent_and_run(db: Database, tenant_id: UUID, slug: str = "akira") -> tuple[UUID, UUID]:
    async with db.tenant_connection(tenant_id) as conn:
        cur = await conn.execute(
            "INSERT INTO agents (tenant_id, slug, name, role, model) "
            "VALUES (%s, %s, %s, 'review', 'offline/offline-1') RETURNING id",
            [tenant_id, slug, slug],
        )
        agent = (await cur.fetchone())["id"]
        cur = await conn.execute(
            "INSERT INTO runs (tenant_id, kind, query, status) "
            "VALUES (%s, 'query', 'q', 'running') RETURNING id",
            [tenant_id],
        )
        run = (await cur.fetchone())["id"]
    return agent, run


def record(
    *,
    at: datetime,
    user: UUID | None = None,
    key: UUID | None = None,
    agent: UUID | None = None,
    run: UUID | None = None,
    model: str = "gpt-4o",
    prompt: int = 100,
    completion: int = 20,
    cached: int = 0,
    cost: Decimal | None = Decimal("0.001"),
    latency: int = 10,
) -> dict[str, Any]:
    return {
        "created_at": at, "llm_call_id": uuid.uuid4(), "user_id": user, "api_key_id": key,
        "session_id": None, "run_id": run, "task_id": None, "agent_id": agent,
        "provider": "openai", "model": model, "prompt_tokens": prompt,
        "completion_tokens": completion, "cached_tokens": cached, "cost_usd": cost,
        "cost_source": "unknown" if cost is None else "price", "latency_ms": latency,
    }


async def insert_records(conn: Any, records: list[dict[str, Any]]) -> None:
    """One statement for the batch (the statement trigger sees them all at once)."""
    if not records:
        return
    cols = list(records[0])
    values = ", ".join(
        "(app_current_tenant(), " + ", ".join(f"%({c}_{i})s" for c in cols) + ")"
        for i in range(len(records))
    )
    params = {f"{c}_{i}": r[c] for i, r in enumerate(records) for c in cols}
    await conn.execute(
        f"INSERT INTO usage_records (tenant_id, {', '.join(cols)}) VALUES {values}", params
    )


async def rollup_vs_raw(db: Database, tenant_id: UUID) -> tuple[list[Any], list[Any]]:
    """Per dimension, key and day: the rollup's sums and the same computed from raw rows."""
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            """
            SELECT dimension, key, day, sum(calls) AS calls, sum(prompt_tokens) AS p,
                   sum(completion_tokens) AS c, sum(cached_tokens) AS k, sum(cost_usd) AS cost,
                   sum(unpriced_calls) AS unpriced, sum(llm_latency_ms) AS lat
            FROM usage_daily WHERE tenant_id = %s AND dimension <> 'project' AND calls <> 0
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
            """,
            [tenant_id],
        )
        rolled = [tuple(r.values()) for r in await cur.fetchall()]
        parts = " UNION ALL ".join(
            f"""SELECT '{dim}' AS dimension, {expr} AS key, usage_utc_day(created_at) AS day,
                       count(*) AS calls, sum(prompt_tokens) AS p, sum(completion_tokens) AS c,
                       sum(cached_tokens) AS k, coalesce(sum(cost_usd), 0) AS cost,
                       count(*) FILTER (WHERE cost_usd IS NULL) AS unpriced,
                       sum(latency_ms) AS lat
                FROM usage_records WHERE tenant_id = %(t)s AND {expr} IS NOT NULL
                GROUP BY 1, 2, 3"""
            for dim, expr in DIMENSIONS.items()
        )
        cur = await conn.execute(f"SELECT * FROM ({parts}) x ORDER BY 1, 2, 3", {"t": tenant_id})
        raw = [tuple(r.values()) for r in await cur.fetchall()]
    return rolled, raw


async def tasks_vs_raw(db: Database, tenant_id: UUID) -> tuple[list[Any], list[Any]]:
    """Task counts and durations per agent and day: rollup against the tasks' states."""
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            """
            SELECT key, day, sum(tasks_completed) AS ok, sum(tasks_failed) AS failed,
                   sum(task_duration_ms) AS ms
            FROM usage_daily WHERE tenant_id = %s AND dimension = 'agent'
            GROUP BY 1, 2 HAVING sum(tasks_completed) <> 0 OR sum(tasks_failed) <> 0
            ORDER BY 1, 2
            """,
            [tenant_id],
        )
        rolled = [tuple(r.values()) for r in await cur.fetchall()]
        cur = await conn.execute(
            """
            SELECT agent_id::text, usage_utc_day(completed_at) AS day,
                   count(*) FILTER (WHERE status = 'completed') AS ok,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   coalesce(sum(duration_ms), 0) AS ms
            FROM tasks WHERE tenant_id = %s AND status IN ('completed', 'failed')
            GROUP BY 1, 2 ORDER BY 1, 2
            """,
            [tenant_id],
        )
        raw = [tuple(r.values()) for r in await cur.fetchall()]
    return rolled, raw


async def runs_vs_raw(db: Database, tenant_id: UUID) -> tuple[list[Any], list[Any]]:
    """Runs ended per day and way: rollup against the runs' states."""
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            """
            SELECT day, sum(runs_completed) AS ok, sum(runs_failed) AS failed,
                   sum(runs_cancelled) AS cancelled
            FROM usage_daily WHERE tenant_id = %s AND dimension = 'tenant'
            GROUP BY 1
            HAVING sum(runs_completed) <> 0 OR sum(runs_failed) <> 0 OR sum(runs_cancelled) <> 0
            ORDER BY 1
            """,
            [tenant_id],
        )
        rolled = [tuple(r.values()) for r in await cur.fetchall()]
        cur = await conn.execute(
            """
            SELECT usage_utc_day(completed_at) AS day,
                   count(*) FILTER (WHERE status = 'completed') AS ok,
                   count(*) FILTER (WHERE status = 'failed') AS failed,
                   count(*) FILTER (WHERE status = 'cancelled') AS cancelled
            FROM runs WHERE tenant_id = %s AND status IN ('completed', 'failed', 'cancelled')
            GROUP BY 1 ORDER BY 1
            """,
            [tenant_id],
        )
        raw = [tuple(r.values()) for r in await cur.fetchall()]
    return rolled, raw
