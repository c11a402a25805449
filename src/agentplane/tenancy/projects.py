"""Projects and their members, inside a tenant."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentplane.auth import audit
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import Principal
from agentplane.db.pool import Database
from agentplane.errors import Conflict, NotFound
from agentplane.tenancy import store
from agentplane.tenancy.users import (
    audit_value,
    conflict_on,
)


async def create_project(
    db: Database, principal: Principal, fields: dict[str, Any], origin: Origin = NOWHERE
) -> dict[str, Any]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        try:
            row = await store.insert_project(
                conn,
                principal.tenant_id,
                fields["name"],
                fields["slug"],
                fields.get("description"),
                fields.get("settings") or {},
                principal.user_id,
            )
        except Conflict as exc:
            raise conflict_on("slug", exc) from None
        await audit.record(
            conn,
            principal.tenant_id,
            "project_created",
            actor=principal,
            resource_type="project",
            resource_id=row["id"],
            new={"name": row["name"], "slug": row["slug"]},
            origin=origin,
        )
    return row


async def list_projects(
    db: Database, principal: Principal, include_archived: bool
) -> list[dict[str, Any]]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        return await store.list_projects(conn, include_archived)


async def get_project(db: Database, principal: Principal, project_id: UUID) -> dict[str, Any]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        row = await store.get_project(conn, project_id)
    if row is None:
        raise NotFound("project not found")
    return row


async def update_project(
    db: Database,
    principal: Principal,
    project_id: UUID,
    changes: dict[str, Any],
    origin: Origin = NOWHERE,
) -> dict[str, Any]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        old = await store.get_project(conn, project_id)
        if old is None:
            raise NotFound("project not found")
        row = await store.update_project(conn, project_id, changes)
        assert row is not None
        await audit.record(
            conn,
            principal.tenant_id,
            "project_updated",
            actor=principal,
            resource_type="project",
            resource_id=project_id,
            old={k: audit_value(old.get(k)) for k in changes},
            new={k: audit_value(row.get(k)) for k in changes},
            origin=origin,
        )
    return row


async def delete_project(
    db: Database, principal: Principal, project_id: UUID, origin: Origin = NOWHERE
) -> None:
    async with db.tenant_connection(principal.tenant_id) as conn:
        if not await store.delete_project(conn, project_id):
            raise NotFound("project not found")
        await audit.record(
            conn,
            principal.tenant_id,
            "project_deleted",
            actor=principal,
            resource_type="project",
            resource_id=project_id,
            origin=origin,
        )


async def list_project_members(
    db: Database, principal: Principal, project_id: UUID
) -> list[dict[str, Any]]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        if await store.get_project(conn, project_id) is None:
            raise NotFound("project not found")
        return await store.list_project_members(conn, project_id)


async def put_project_member(
    db: Database,
    principal: Principal,
    project_id: UUID,
    user_id: UUID,
    role: str,
    origin: Origin = NOWHERE,
) -> dict[str, Any]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        if await store.get_project(conn, project_id) is None:
            raise NotFound("project not found")
        if await store.get_member(conn, user_id) is None:
            raise NotFound("member not found")
        row = await store.upsert_project_member(
            conn, principal.tenant_id, project_id, user_id, role, principal.user_id
        )
        await audit.record(
            conn,
            principal.tenant_id,
            "project_member_set",
            actor=principal,
            resource_type="project",
            resource_id=project_id,
            new={"user_id": str(user_id), "role": role},
            origin=origin,
        )
    return row


async def remove_project_member(
    db: Database,
    principal: Principal,
    project_id: UUID,
    user_id: UUID,
    origin: Origin = NOWHERE,
) -> None:
    async with db.tenant_connection(principal.tenant_id) as conn:
        if await store.get_project(conn, project_id) is None:
            raise NotFound("project not found")
        if not await store.delete_project_member(conn, project_id, user_id):
            raise NotFound("project member not found")
        await audit.record(
            conn,
            principal.tenant_id,
            "project_member_removed",
            actor=principal,
            resource_type="project",
            resource_id=project_id,
            old={"user_id": str(user_id)},
            origin=origin,
        )
