"""The gateway's tests: the app served by uvicorn on a real port (in a thread of its own,
with pools of its own), tenants with keys and providers, and the rows a call leaves."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx
import uvicorn

from agentplane.app import create_app
from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database
from agentplane.llm import service
from agentplane.llm.models import ProviderCreate
from tests.conftest import TenantContext, free_port, make_tenant


@contextmanager
def live_server(settings: Settings, endpoints: ep.Endpoints) -> Iterator[str]:
    """The whole app on 127.0.0.1:<free port>, as `agentplane up` serves it."""
    port = free_port()
    app = create_app(settings, endpoints=endpoints)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="on", timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise AssertionError("the gateway's server did not start")
        time.sleep(0.02)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(15)


async def gateway_tenant(
    db: Database, *, scopes: list[str] | None = None, token_limit: int | None = None, **kw: Any
) -> TenantContext:
    t = await make_tenant(db, scopes=scopes if scopes is not None else ["llm:invoke"], **kw)
    if token_limit is not None:
        async with db.admin_connection() as conn:
            await conn.execute(
                "UPDATE tenants SET token_limit = %s WHERE id = %s", [token_limit, t.tenant_id]
            )
    return t


async def add_provider(db: Database, settings: Settings, tenant_id: UUID, **kw: Any) -> None:
    async with db.tenant_connection(tenant_id) as conn:
        await service.create_provider(conn, settings, ProviderCreate(**kw))


async def rows(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(sql, list(params))
        return await cur.fetchall()


async def one(db: Database, sql: str, *params: Any) -> dict[str, Any]:
    found = await rows(db, sql, *params)
    assert len(found) == 1, found
    return found[0]


async def reservations(db: Database, tenant_id: UUID) -> dict[str, Any]:
    """What is still held for a tenant: its reservations and counters."""
    return await one(
        db,
        """
        SELECT (SELECT count(*) FROM budget_reservations WHERE tenant_id = t.id) AS reservations,
               t.tokens_reserved AS tenant,
               (SELECT coalesce(sum(tokens_reserved), 0) FROM api_key_budgets
                WHERE tenant_id = t.id) AS keys,
               (SELECT coalesce(sum(tokens_reserved), 0) FROM sessions
                WHERE tenant_id = t.id) AS sessions
        FROM tenants t WHERE t.id = %s
        """,
        tenant_id,
    )


NO_HOLD = {"reservations": 0, "tenant": 0, "keys": 0, "sessions": 0}


async def settled(db: Database, tenant_id: UUID, within_s: float = 10.0) -> dict[str, Any]:
    """The tenant's reservations once every call in flight has settled (or the last seen)."""
    deadline = time.monotonic() + within_s
    while True:
        found = await reservations(db, tenant_id)
        if found == NO_HOLD or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)


def raw_stream(url: str, key: str, body: dict[str, Any], **headers: str) -> list[str]:
    """The data: lines of a streamed answer, as they came."""
    with httpx.stream(
        "POST", f"{url}/v1/chat/completions", json=body, timeout=30,
        headers={"Authorization": f"Bearer {key}", **headers},
    ) as r:
        assert r.status_code == 200, r.read()
        return [line for line in r.iter_lines() if line]
