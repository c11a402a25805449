"""Members and invitations: roles in a tenant (only owners make or unmake owners),
invitations sent, cancelled and accepted.

Every function runs one transaction on a tenant connection (RLS applies) and writes its
audit entries in that same transaction."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentplane.auth import audit, secrets
from agentplane.auth import cache as keycache
from agentplane.auth import scopes as sc
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import Principal
from agentplane.db.pool import Connection, Database
from agentplane.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agentplane.tenancy import store
from agentplane.tenancy.users import (
    NewUser,
    find_user_id,
    insert_new_user,
)


async def add_member(
    db: Database,
    tenant_id: UUID,
    user: NewUser,
    role: str,
    *,
    actor: Principal | None = None,
    origin: Origin = NOWHERE,
) -> tuple[UUID, bool]:
    """Make a user a member (creating the user if the email is new). (user id, created)."""
    if role not in sc.ROLES:
        raise ValidationFailed(f"role must be one of {', '.join(sc.ROLES)}")
    async with db.tenant_connection(tenant_id) as conn:
        if await store.get_tenant(conn, tenant_id) is None:
            raise NotFound("tenant not found")
        existing = await find_user_id(conn, user.email)
        user_id = existing or await insert_new_user(conn, user)
        try:
            await store.insert_membership(conn, tenant_id, user_id, role, actor and actor.user_id)
        except Conflict:
            raise Conflict("this user is already a member of the tenant") from None
        await audit.record(
            conn,
            tenant_id,
            "member_added",
            actor=actor,
            resource_type="membership",
            resource_id=user_id,
            new={"role": role},
            origin=origin,
        )
    return user_id, existing is None


async def list_members(db: Database, principal: Principal) -> list[dict[str, Any]]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        return await store.list_members(conn)


async def get_member(db: Database, principal: Principal, user_id: UUID) -> dict[str, Any]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        row = await store.get_member(conn, user_id)
    if row is None:
        raise NotFound("member not found")
    return row


def _check_owner_rules(principal: Principal, current_role: str, new_role: str | None) -> None:
    touches_owner = current_role == "owner" or new_role == "owner"
    if touches_owner and principal.role != "owner":
        raise Forbidden("only an owner makes, changes or removes an owner")


async def change_member(
    db: Database,
    principal: Principal,
    user_id: UUID,
    role: str | None,
    permissions: list[str] | None,
    origin: Origin = NOWHERE,
) -> dict[str, Any]:
    if permissions is not None and not set(permissions) <= principal.scopes:
        raise Forbidden("cannot grant permissions you do not have")
    async with db.tenant_connection(principal.tenant_id) as conn:
        owners = await store.lock_owners(conn)
        old = await store.get_member_for_update(conn, user_id)
        if old is None:
            raise NotFound("member not found")
        _check_owner_rules(principal, old["role"], role)
        if old["role"] == "owner" and role not in (None, "owner") and owners <= 1:
            raise Conflict("a tenant keeps at least one owner")
        await store.update_member(conn, user_id, role, permissions)
        row = await store.get_member(conn, user_id)
        assert row is not None
        await audit.record(
            conn,
            principal.tenant_id,
            "permission_changed",
            actor=principal,
            resource_type="membership",
            resource_id=user_id,
            old={"role": old["role"], "permissions": old["permissions"]},
            new={"role": row["role"], "permissions": row["permissions"]},
            origin=origin,
        )
    keycache.invalidate(db, user_id=user_id)
    return row


async def remove_member(
    db: Database, principal: Principal, user_id: UUID, origin: Origin = NOWHERE
) -> None:
    """Removes the membership; its API keys and login sessions go with it (foreign keys)."""
    async with db.tenant_connection(principal.tenant_id) as conn:
        owners = await store.lock_owners(conn)
        old = await store.get_member_for_update(conn, user_id)
        if old is None:
            raise NotFound("member not found")
        _check_owner_rules(principal, old["role"], None)
        if old["role"] == "owner" and owners <= 1:
            raise Conflict("a tenant keeps at least one owner")
        await store.delete_member(conn, user_id)
        await audit.record(
            conn,
            principal.tenant_id,
            "member_removed",
            actor=principal,
            resource_type="membership",
            resource_id=user_id,
            old={"role": old["role"]},
            origin=origin,
        )
    keycache.invalidate(db, user_id=user_id)


INVITATION_TTL_SECONDS = 7 * 24 * 3600




async def invite(
    db: Database, principal: Principal, email: str, role: str, origin: Origin = NOWHERE
) -> tuple[dict[str, Any], str]:
    token, token_hash = secrets.new_token(secrets.INVITATION_PREFIX)
    async with db.tenant_connection(principal.tenant_id) as conn:
        row = await store.insert_invitation(
            conn,
            principal.tenant_id,
            email,
            role,
            token_hash,
            principal.user_id,
            INVITATION_TTL_SECONDS,
        )
        await audit.record(
            conn,
            principal.tenant_id,
            "member_invited",
            actor=principal,
            resource_type="invitation",
            resource_id=row["id"],
            new={"email": email, "role": role},
            origin=origin,
        )
    return row, token


async def list_invitations(db: Database, principal: Principal) -> list[dict[str, Any]]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        return await store.list_invitations(conn)


async def cancel_invitation(
    db: Database, principal: Principal, invitation_id: UUID, origin: Origin = NOWHERE
) -> None:
    async with db.tenant_connection(principal.tenant_id) as conn:
        if not await store.delete_invitation(conn, invitation_id):
            raise NotFound("invitation not found")
        await audit.record(
            conn,
            principal.tenant_id,
            "invitation_cancelled",
            actor=principal,
            resource_type="invitation",
            resource_id=invitation_id,
            origin=origin,
        )


async def accept_invitation(
    conn: Connection, token: str, user_id: UUID | None, user: NewUser, origin: Origin
) -> tuple[UUID, str]:
    """On the invitation's tenant connection: the membership for (new or existing) user."""
    invitation = await store.take_invitation(conn, secrets.digest(token))
    if invitation is None:
        raise NotFound("invitation not found, expired or already used")
    if not secrets.same(invitation["email"], user.email.strip().lower()):
        raise Forbidden("this invitation is for another email address")
    if user_id is None:
        user_id = await insert_new_user(conn, user)
    try:
        await store.insert_membership(
            conn, invitation["tenant_id"], user_id, invitation["role"], None
        )
    except Conflict:
        raise Conflict("already a member of this tenant") from None
    await store.accept_invitation(conn, invitation["id"], user_id)
    await audit.record(
        conn,
        invitation["tenant_id"],
        "member_joined",
        user_id=user_id,
        resource_type="membership",
        resource_id=user_id,
        new={"role": invitation["role"]},
        details={"invitation_id": str(invitation["id"])},
        origin=origin,
    )
    return user_id, invitation["role"]
