"""Helpers of the event log tests: runs to append to, a live server, an SSE reader."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import httpx
import uvicorn

from agentplane.db.pool import Database
from agentplane.events import NewEvent, append
from tests.conftest import free_port


async def make_run(db: Database, tenant_id: UUID) -> UUID:
    """A run row with only what `runs` requires (the runtime owns how runs are made)."""
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "INSERT INTO runs (tenant_id, kind) VALUES (%s, 'query') RETURNING id", [tenant_id]
        )
        row = await cur.fetchone()
    assert row is not None
    return row["id"]


async def emit(db: Database, tenant_id: UUID, run_id: UUID, *types: str, **kw: Any) -> list[int]:
    """Append events of these types in one committed transaction."""
    async with db.tenant_connection(tenant_id) as conn:
        return await append(
            conn, tenant_id=tenant_id, run_id=run_id, events=[NewEvent(type=t) for t in types],
            **kw,
        )


@contextlib.asynccontextmanager
async def live_server(app: Any) -> AsyncIterator[str]:
    """The app on a real HTTP port, in this event loop; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, log_config=None, lifespan="off", ws="none",
        timeout_graceful_shutdown=1,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    await eventually(lambda: server.started, seconds=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait until `condition()` holds; fail after `seconds`."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 - state of other objects, polled briefly
            await asyncio.sleep(0.01)


@dataclass
class SSE:
    """One Server-Sent Event as a client sees it."""

    id: str | None = None
    event: str | None = None
    data: list[str] = field(default_factory=list)

    @property
    def body(self) -> dict[str, Any]:
        return json.loads("\n".join(self.data))


async def read_sse(
    response: httpx.Response, comments: list[str] | None = None
) -> AsyncIterator[SSE]:
    """Parse an event stream (id, event, data fields; comments collected if asked)."""
    current = SSE()
    async for line in response.aiter_lines():
        if line == "":
            if current.data:
                yield current
            current = SSE()
        elif line.startswith(":"):
            if comments is not None:
                comments.append(line[1:].strip())
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "id":
                current.id = value
            elif name == "event":
                current.event = value
            elif name == "data":
                current.data.append(value)
