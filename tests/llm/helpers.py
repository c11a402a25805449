"""Shared set-up of the LLM tests: tenants with a known token limit, sessions, providers."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentplane.db.pool import Database
from tests.conftest import TenantContext, make_tenant

MESSAGES = [{"role": "user", "content": "Plan the release of version two, please."}]


async def tenant(db: Database, token_limit: int = 10**12, **kw: Any) -> TenantContext:
    t = await make_tenant(db, **kw)
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE tenants SET token_limit = %s WHERE id = %s", [token_limit, t.tenant_id]
        )
    return t


async def session(db: Database, tenant_id: UUID, budget: int, **kw: Any) -> UUID:
    from agentplane.sessions import service
    from agentplane.sessions.models import SessionCreate

    async with db.tenant_connection(tenant_id) as conn:
        s = await service.create(conn, None, SessionCreate(token_budget=budget, **kw))
    return s.id


async def row(db: Database, sql: str, *params: Any) -> dict[str, Any]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(sql, list(params))
        return await cur.fetchone()
