"""Writing the audit log. Entries are written in the transaction of the change they
describe, so a change and its record commit (or vanish) together."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agentplane import pagination
from agentplane.auth import store
from agentplane.auth.models import Principal
from agentplane.db.pool import Connection, Database


@dataclass(frozen=True)
class Origin:
    """Where a request came from, for the audit log."""

    ip: str | None = None
    user_agent: str | None = None


NOWHERE = Origin()


async def record(
    conn: Connection,
    tenant_id: UUID,
    event_type: str,
    *,
    actor: Principal | None = None,
    user_id: UUID | None = None,
    resource_type: str | None = None,
    resource_id: UUID | str | None = None,
    old: Any = None,
    new: Any = None,
    details: dict[str, Any] | None = None,
    origin: Origin = NOWHERE,
) -> None:
    await store.insert_audit(
        conn,
        tenant_id=tenant_id,
        event_type=event_type,
        user_id=actor.user_id if actor else user_id,
        api_key_id=actor.api_key_id if actor else None,
        resource_type=resource_type,
        resource_id=None if resource_id is None else str(resource_id),
        old_values=old,
        new_values=new,
        details=details or {},
        ip=origin.ip,
        user_agent=origin.user_agent[:500] if origin.user_agent else None,
    )


async def query_audit(
    db: Database, principal: Principal, *, limit: int, cursor: str | None, **filters: Any
) -> tuple[list[dict[str, Any]], str | None]:
    after = pagination.decode(cursor) if cursor else None
    async with db.tenant_connection(principal.tenant_id) as conn:
        rows = await store.query_audit(conn, after=after, limit=limit + 1, **filters)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = pagination.encode(rows[-1]["created_at"], rows[-1]["id"]) if more else None
    return rows, next_cursor
