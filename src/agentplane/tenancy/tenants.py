"""Tenants: created with their first owner, read, changed, deleted; and the operator's
lookups across tenants (the CLI's `--tenant`), on the owner connection."""

from __future__ import annotations

import re
import uuid
from typing import Any
from uuid import UUID

from agentplane.auth import audit, passwords
from agentplane.auth import cache as keycache
from agentplane.auth import scopes as sc
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import TENANT_RATE_LIMIT_PER_HOUR, Principal
from agentplane.db.pool import Connection, Database
from agentplane.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agentplane.tenancy import store
from agentplane.tenancy.users import (
    NewUser,
    audit_value,
    conflict_on,
    insert_new_user,
)


async def create_tenant(
    db: Database,
    *,
    name: str,
    slug: str,
    owner: NewUser | UUID,
    plan: str | None = None,
    rate_limit_per_hour: int | None = None,
    token_limit: int | None = None,
    origin: Origin = NOWHERE,
) -> tuple[dict[str, Any], UUID]:
    """A tenant and its first owner (a new user, or an existing user by id)."""
    if isinstance(owner, NewUser) and owner.password is not None:
        # Policy first: a weak password must not cost a round trip.
        passwords.check_policy(owner.password, email=owner.email)
    tenant_id = uuid.uuid4()
    async with db.tenant_connection(tenant_id) as conn:
        return await create_tenant_in(
            conn,
            tenant_id,
            name=name,
            slug=slug,
            owner=owner,
            plan=plan,
            rate_limit_per_hour=rate_limit_per_hour,
            token_limit=token_limit,
            origin=origin,
        )


async def create_tenant_in(
    conn: Connection,
    tenant_id: UUID,
    *,
    name: str,
    slug: str,
    owner: NewUser | UUID,
    plan: str | None = None,
    rate_limit_per_hour: int | None = None,
    token_limit: int | None = None,
    origin: Origin = NOWHERE,
) -> tuple[dict[str, Any], UUID]:
    """create_tenant within a transaction whose app.tenant_id is already `tenant_id`."""
    try:
        tenant = await store.insert_tenant(
            conn,
            tenant_id,
            name,
            slug,
            {
                "plan": plan,
                "rate_limit_per_hour": TENANT_RATE_LIMIT_PER_HOUR
                if rate_limit_per_hour is None
                else rate_limit_per_hour,
                "token_limit": token_limit,
            },
        )
    except Conflict as exc:
        raise conflict_on("slug", exc) from None
    user_id = owner if isinstance(owner, UUID) else await insert_new_user(conn, owner)
    await store.insert_membership(conn, tenant_id, user_id, "owner", None)
    await audit.record(
        conn,
        tenant_id,
        "tenant_created",
        user_id=user_id,
        resource_type="tenant",
        resource_id=tenant_id,
        new={"name": name, "slug": slug},
        origin=origin,
    )
    await audit.record(
        conn,
        tenant_id,
        "member_added",
        user_id=user_id,
        resource_type="membership",
        resource_id=user_id,
        new={"role": "owner"},
        origin=origin,
    )
    return tenant, user_id


async def get_tenant(db: Database, principal: Principal, tenant_id: UUID) -> dict[str, Any]:
    async with db.tenant_connection(principal.tenant_id) as conn:
        row = await store.get_tenant(conn, tenant_id)
    if row is None:
        raise NotFound("tenant not found")
    return row


async def update_tenant(
    db: Database,
    principal: Principal,
    tenant_id: UUID,
    changes: dict[str, Any],
    origin: Origin = NOWHERE,
) -> dict[str, Any]:
    if {"plan", "token_limit"} & changes.keys() and principal.role != "owner":
        raise Forbidden("only an owner changes the plan or the token limit")
    async with db.tenant_connection(principal.tenant_id) as conn:
        old = await store.get_tenant(conn, tenant_id)
        if old is None:
            raise NotFound("tenant not found")
        row = await store.update_tenant(conn, tenant_id, changes)
        assert row is not None
        await audit.record(
            conn,
            principal.tenant_id,
            "tenant_updated",
            actor=principal,
            resource_type="tenant",
            resource_id=tenant_id,
            old={k: audit_value(old[k]) for k in changes},
            new={k: audit_value(row[k]) for k in changes},
            origin=origin,
        )
    # Committed: this process forgets at once, the others on notification.
    keycache.invalidate(db, tenant_id=tenant_id)
    return row


async def delete_tenant(
    db: Database, principal: Principal, tenant_id: UUID, origin: Origin = NOWHERE
) -> None:
    """Soft delete: the tenant stops authenticating at once; its data stays for retention."""
    async with db.tenant_connection(principal.tenant_id) as conn:
        row = await store.soft_delete_tenant(conn, tenant_id)
        if row is None:
            raise NotFound("tenant not found")
        await audit.record(
            conn,
            principal.tenant_id,
            "tenant_deleted",
            actor=principal,
            resource_type="tenant",
            resource_id=tenant_id,
            origin=origin,
        )
    keycache.invalidate(db, tenant_id=tenant_id)




ID_PREFIX = re.compile(r"[0-9a-f-]{4,36}")


async def resolve_tenant_admin(db: Database, ref: str | None) -> UUID:
    """The tenant a command names by slug or id (a unique prefix of the id will do, as
    git takes commits); an unknown or missing one is an error naming the tenants there are."""
    ref = (ref or "").strip().lower()
    async with db.admin_connection() as conn:
        found = []
        if ref:
            prefix = ref if ID_PREFIX.fullmatch(ref) else None
            found = await store.tenants_by_ref(conn, ref, prefix)
        if len(found) == 1:
            return found[0]["id"]
        known = await store.tenant_slugs(conn)
    there = f"tenants: {', '.join(known)}" if known else "none yet: agentplane tenant create"
    if not ref:
        raise ValidationFailed(f"which tenant? give --tenant or set AGENTPLANE_TENANT ({there})")
    if found:
        raise ValidationFailed(f"tenant {ref!r} is ambiguous: give more of its id, or its slug")
    raise NotFound(f"no tenant {ref!r} ({there})")


async def tenant_owner_admin(db: Database, tenant_id: UUID) -> UUID | None:
    async with db.admin_connection() as conn:
        return await store.tenant_owner(conn, tenant_id)


async def owner_principal(db: Database, tenant: str | None) -> Principal:
    """The command line acts as the owner of the tenant it is given (slug or id); it never
    makes one up: an unknown tenant is an error naming the known ones."""
    tenant_id = await resolve_tenant_admin(db, tenant)
    return owner_of(tenant_id, await tenant_owner_admin(db, tenant_id))


def owner_of(tenant_id: UUID, user_id: UUID | None) -> Principal:
    """A principal with every scope: the tenant's owner, as the command line acts."""
    return Principal(
        tenant_id=tenant_id,
        user_id=user_id,
        role="owner",
        scopes=frozenset(sc.ALL_SCOPES),
        api_key_id=None,
    )


async def list_tenants_admin(db: Database) -> list[dict[str, Any]]:
    async with db.admin_connection() as conn:
        return await store.list_tenants(conn)


async def list_members_admin(db: Database, tenant_id: UUID) -> list[dict[str, Any]]:
    async with db.tenant_connection(tenant_id) as conn:
        return await store.list_members(conn)
