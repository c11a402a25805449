"""Sessions: create, look up by id or by a caller's external id, update, soft delete."""

from __future__ import annotations

from uuid import UUID

from agentplane import pagination
from agentplane.db.pool import Connection
from agentplane.errors import Conflict, NotFound
from agentplane.sessions import store
from agentplane.sessions.models import Session, SessionCreate, SessionPage, SessionUpdate


async def create(conn: Connection, user_id: UUID | None, body: SessionCreate) -> Session:
    if body.external_id is not None and await store.by_external_id(conn, user_id, body.external_id):
        raise Conflict(f"external_id {body.external_id} is already used by a live session")
    row = await store.insert(conn, user_id, body.model_dump())
    return Session.model_validate(row)


async def get(conn: Connection, ref: str, user_id: UUID | None = None) -> Session:
    """By id, or else by external id (the caller's own, non-UUID session names)."""
    try:
        session_id: UUID | None = UUID(ref)
    except ValueError:
        session_id = None
    row = await store.get(conn, session_id) if session_id else None
    if row is None:
        row = await store.by_external_id(conn, user_id, ref)
    if row is None:
        raise NotFound(f"session {ref} not found")
    return Session.model_validate(row)


async def list_(
    conn: Connection, user_id: UUID | None = None, include_deleted: bool = False, limit: int = 100
) -> list[Session]:
    return (await page(conn, user_id, include_deleted, limit)).items


async def page(
    conn: Connection, user_id: UUID | None = None, include_deleted: bool = False,
    limit: int = 100, cursor: str | None = None,
) -> SessionPage:
    """A page of sessions, newest first, after `cursor` (InvalidCursor if it is not one
    of this listing's)."""
    before_at, before_id = pagination.decode(cursor) if cursor else (None, None)
    rows = await store.list_(conn, user_id, include_deleted, limit + 1, before_at, before_id)
    items = [Session.model_validate(r) for r in rows[:limit]]
    last = items[-1] if len(rows) > limit else None
    return SessionPage(items=items,
                         next_cursor=pagination.encode(last.created_at, last.id) if last else None)


async def update(
    conn: Connection, ref: str, body: SessionUpdate, user_id: UUID | None = None
) -> Session:
    current = await get(conn, ref, user_id)
    values = body.model_dump(exclude_unset=True)
    if not values:
        return current
    row = await store.update(conn, current.id, values)
    if row is None:
        raise NotFound(f"session {ref} not found")
    return Session.model_validate(row)


async def delete(conn: Connection, ref: str, by: UUID | None, user_id: UUID | None = None) -> None:
    current = await get(conn, ref, user_id)
    if not await store.soft_delete(conn, current.id, by):
        raise NotFound(f"session {ref} not found")
