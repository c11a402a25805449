"""Shared pieces of the runtime tests: a team of agents, a worker in this process,
waiting for a run to settle."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.queue.registry import registry
from agentplane.queue.worker import Worker, WorkerOptions
from agentplane.runtime import handler
from tests.conftest import TenantContext, make_tenant

TERMINAL = {"completed", "failed", "cancelled"}


async def tenant(db: Database, **kw: Any) -> TenantContext:
    """A tenant with a monthly token limit that tests do not run into."""
    ctx = await make_tenant(db, **kw)
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE tenants SET token_limit = 100000000 WHERE id = %s", [ctx.tenant_id]
        )
    return ctx


def agent(slug: str, **kw: Any) -> dict[str, Any]:
    return {
        "id": slug,
        "name": slug.title(),
        "role": kw.pop("role", "engineer"),
        "max_tokens": 200,
        **kw,
    }


async def add_agents(client: httpx.AsyncClient, ctx: TenantContext, *agents: dict) -> None:
    for body in agents:
        r = await client.post("/v1/agents", json=body, headers=ctx.headers)
        assert r.status_code == 201, r.text


@contextlib.asynccontextmanager
async def worker(db: Database, settings: Settings, concurrency: int = 8) -> AsyncIterator[Worker]:
    handler.use(db, settings)
    w = Worker(
        db.endpoints.app,
        WorkerOptions(poll_interval=0.05, concurrency=concurrency, schedules=False),
        registry,
    )
    task = asyncio.create_task(w.run())
    try:
        yield w
    finally:
        w.stop()
        await asyncio.wait_for(task, 30)


async def settle(
    client: httpx.AsyncClient,
    ctx: TenantContext,
    run_id: str,
    statuses: set[str] = TERMINAL,
    timeout: float = 20,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Poll the run until its status is one of `statuses`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        r = await client.get(f"/v1/runs/{run_id}", headers=ctx.headers)
        assert r.status_code == 200, r.text
        run = r.json()
        if run["status"] in statuses:
            return run
        assert loop.time() < end, f"run still {run['status']} after {timeout}s"
        await asyncio.sleep(0.05)


async def count(db: Database, table: str, tenant_id: Any) -> int:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            f"SELECT count(*) AS n FROM {table} WHERE tenant_id = %s", [tenant_id]
        )
        return (await cur.fetchone())["n"]
