"""Handlers the queue tests' worker subprocesses import (`--import tests.queue.handlers`).

Each records its effect in `queue_effects` keyed by job id (unique): a second
successful run of the same job would be a visible duplicate or a no-op insert,
and `queue_runs` logs every attempt that started.
"""

from __future__ import annotations

import asyncio
import os

import psycopg

from agentplane.queue import JobContext, PermanentError, handler

_conn: psycopg.AsyncConnection | None = None


async def _db() -> psycopg.AsyncConnection:
    global _conn
    if _conn is None or _conn.closed or _conn.broken:
        _conn = await psycopg.AsyncConnection.connect(os.environ["TEST_EFFECTS_URL"],
                                                      autocommit=True)
    return _conn


async def _record(ctx: JobContext, table: str) -> None:
    conn = await _db()
    if table == "queue_effects":
        await conn.execute(
            "INSERT INTO queue_effects (job_id, attempt) VALUES (%s, %s)"
            " ON CONFLICT (job_id) DO NOTHING", [ctx.job_id, ctx.attempt])
    else:
        await conn.execute("INSERT INTO queue_runs (job_id, attempt) VALUES (%s, %s)",
                           [ctx.job_id, ctx.attempt])


@handler("test.effect")
async def effect(ctx: JobContext) -> dict:
    """Sleeps `sleep` seconds, then records its effect once; `fail` in payload: dead letter."""
    await _record(ctx, "queue_runs")
    if ctx.payload.get("sleep"):
        await asyncio.sleep(ctx.payload["sleep"])
    if ctx.payload.get("sleep_first") and ctx.attempt == 1:
        await asyncio.sleep(ctx.payload["sleep_first"])
    if ctx.payload.get("fail"):
        raise PermanentError("told to fail")
    await _record(ctx, "queue_effects")
    return {"n": ctx.payload.get("n")}
