"""All SQL of the queue: named queries from queries.sql, loaded once."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import Any

from psycopg import AsyncCursor

from agentplane.db.pool import Connection

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    text = (Path(__file__).parent / "queries.sql").read_text()
    parts = _NAME.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


async def send(conn: Connection, name: str, /, **params: Any) -> AsyncCursor[dict[str, Any]]:
    """Execute without reading: in a pipeline, the statement waits for the pipeline's
    sync instead of forcing one; read the cursor after it."""
    return await conn.execute(queries()[name], params)


async def fetch_all(conn: Connection, name: str, /, **params: Any) -> list[dict[str, Any]]:
    cur = await conn.execute(queries()[name], params)
    return await cur.fetchall()


async def fetch_one(conn: Connection, name: str, /, **params: Any) -> dict[str, Any] | None:
    cur = await conn.execute(queries()[name], params)
    return await cur.fetchone()


async def execute(conn: Connection, name: str, /, **params: Any) -> int:
    cur = await conn.execute(queries()[name], params)
    return cur.rowcount
