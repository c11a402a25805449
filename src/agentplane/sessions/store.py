"""SQL of sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection


async def insert(conn: Connection, user_id: UUID | None, values: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        """
        INSERT INTO sessions (tenant_id, user_id, external_id, context, token_budget,
                              memory_id, expires_at)
        VALUES (app_current_tenant(), %(user_id)s, %(external_id)s, %(context)s,
                %(token_budget)s, %(memory_id)s, %(expires_at)s)
        RETURNING *
        """,
        {**values, "user_id": user_id, "context": Jsonb(values["context"])},
    )
    return await cur.fetchone()


async def get(
    conn: Connection, session_id: UUID, include_deleted: bool = False
) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT * FROM sessions WHERE id = %s AND (%s OR deleted_at IS NULL)",
        [session_id, include_deleted],
    )
    return await cur.fetchone()


async def by_external_id(
    conn: Connection, user_id: UUID | None, external_id: str
) -> dict[str, Any] | None:
    cur = await conn.execute(
        """
        SELECT * FROM sessions
        WHERE external_id = %s AND user_id IS NOT DISTINCT FROM %s AND deleted_at IS NULL
        """,
        [external_id, user_id],
    )
    return await cur.fetchone()


async def list_(
    conn: Connection, user_id: UUID | None, include_deleted: bool, limit: int,
    before_at: datetime | None = None, before_id: UUID | None = None,
) -> list[dict[str, Any]]:
    """Newest first; after (before_at, before_id) when given (a cursor's position)."""
    cur = await conn.execute(
        """
        SELECT * FROM sessions
        WHERE (%(user_id)s::uuid IS NULL OR user_id = %(user_id)s)
          AND (%(deleted)s OR deleted_at IS NULL)
          AND (%(before_at)s::timestamptz IS NULL
               OR (created_at, id) < (%(before_at)s, %(before_id)s::uuid))
        ORDER BY created_at DESC, id DESC LIMIT %(limit)s
        """,
        {"user_id": user_id, "deleted": include_deleted, "limit": limit,
         "before_at": before_at, "before_id": before_id},
    )
    return await cur.fetchall()


async def update(
    conn: Connection, session_id: UUID, values: dict[str, Any]
) -> dict[str, Any] | None:
    if "context" in values:
        values = {**values, "context": Jsonb(values["context"])}
    sets = ", ".join(f"{column} = %({column})s" for column in values)
    cur = await conn.execute(
        f"UPDATE sessions SET {sets} WHERE id = %(id)s AND deleted_at IS NULL RETURNING *",
        {**values, "id": session_id},
    )
    return await cur.fetchone()


async def soft_delete(conn: Connection, session_id: UUID, by: UUID | None) -> bool:
    cur = await conn.execute(
        "UPDATE sessions SET deleted_at = now(), deleted_by = %s "
        "WHERE id = %s AND deleted_at IS NULL",
        [by, session_id],
    )
    return cur.rowcount == 1
