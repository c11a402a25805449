"""HTTP: sessions (conversation contexts with a token budget), soft delete, external ids."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from agentplane.auth.deps import DB, Principal, requires
from agentplane.sessions import service
from agentplane.sessions.models import Session, SessionCreate, SessionUpdate

router = APIRouter(tags=["sessions"])
Reader = Annotated[Principal, Depends(requires("sessions:read"))]
Writer = Annotated[Principal, Depends(requires("sessions:write"))]


@router.post("/v1/sessions", status_code=201)
async def create_session(body: SessionCreate, me: Writer, db: DB) -> Session:
    """A session of the caller; external_id must be unused among the caller's live sessions."""
    async with db.tenant_connection(me.tenant_id) as conn:
        return await service.create(conn, me.user_id, body)


@router.get("/v1/sessions")
async def list_sessions(
    me: Reader,
    db: DB,
    include_deleted: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[Session]:
    async with db.tenant_connection(me.tenant_id) as conn:
        return await service.list_(conn, None, include_deleted, limit)


@router.get("/v1/sessions/{ref}")
async def get_session(ref: str, me: Reader, db: DB) -> Session:
    """By id, or by the caller's external id."""
    async with db.tenant_connection(me.tenant_id) as conn:
        return await service.get(conn, ref, me.user_id)


@router.patch("/v1/sessions/{ref}")
async def update_session(ref: str, body: SessionUpdate, me: Writer, db: DB) -> Session:
    async with db.tenant_connection(me.tenant_id) as conn:
        return await service.update(conn, ref, body, me.user_id)


@router.delete("/v1/sessions/{ref}", status_code=204)
async def delete_session(ref: str, me: Writer, db: DB) -> Response:
    """Soft delete: the row stays (deleted_at, deleted_by); its external id is free again."""
    async with db.tenant_connection(me.tenant_id) as conn:
        await service.delete(conn, ref, me.user_id, me.user_id)
    return Response(status_code=204)
