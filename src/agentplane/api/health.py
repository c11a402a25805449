"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request

from agentplane.db.migrate import head
from agentplane.errors import SchemaMismatch

router = APIRouter(tags=["health"])


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/ready")
async def ready(request: Request) -> dict[str, str]:
    """The database answers and is at the latest migration."""
    db = request.app.state.db
    async with db.app_connection() as conn:
        await conn.execute("SELECT 1")
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT version_num FROM alembic_version"
            " WHERE to_regclass('public.alembic_version') IS NOT NULL"
        )
        row = await cur.fetchone()
    current = row["version_num"] if row else None
    expected = head()
    if current != expected:
        raise SchemaMismatch(
            f"database is at migration {current}, expected {expected}",
            current=current,
            expected=expected,
        )
    return {"status": "ready", "migration": current}
