"""Rules of the tenancy package: tenants, users, memberships, invitations, projects
(signing up: agentplane.tenancy.signup).

Every function runs one transaction on a tenant connection (RLS applies) and writes
its audit entries in that same transaction. The `*_admin` functions are for the CLI:
they look tenants up across tenants on the owner connection.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agentplane.auth import audit, passwords, secrets
from agentplane.auth import cache as keycache
from agentplane.auth import scopes as sc
from agentplane.auth import store as auth_store
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import TENANT_RATE_LIMIT_PER_HOUR, Principal
from agentplane.db.pool import Connection, Database
from agentplane.errors import Conflict, Forbidden, NotFound, ValidationFailed
from agentplane.tenancy import store

INVITATION_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True)
class NewUser:
    email: str
    password: str | None = None
    """None: the user signs in with API keys only (until a password is set)."""
    full_name: str | None = None
    username: str | None = None


def _conflict_on(field: str, _: Conflict) -> Conflict:
    return Conflict(f"{field} already exists", errors=[{"field": field, "message": "taken"}])


async def _insert_new_user(conn: Connection, user: NewUser) -> UUID:
    email = user.email.strip().lower()
    username = (user.username or email).strip().lower()
    password_hash = None
    if user.password is not None:
        passwords.check_policy(user.password, email=email, username=username)
        password_hash = await passwords.hash_password(user.password)
    user_id = uuid.uuid4()
    try:
        await store.insert_user(conn, user_id, email, username, password_hash, user.full_name)
    except Conflict as exc:
        raise _conflict_on("username" if "username" in exc.detail else "email", exc) from None
    return user_id


async def find_user_id(conn: Connection, email: str) -> UUID | None:
    row = await auth_store.login_lookup(conn, email.strip().lower(), secrets.email_digest(email))
    return row["user_id"]


# --- tenants ---------------------------------------------------------------------------


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
        raise _conflict_on("slug", exc) from None
    user_id = owner if isinstance(owner, UUID) else await _insert_new_user(conn, owner)
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
            old={k: _json(old[k]) for k in changes},
            new={k: _json(row[k]) for k in changes},
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


def _json(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool | dict | list | None) else str(value)


# --- members -------------------------------------------------------------------------


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
        user_id = existing or await _insert_new_user(conn, user)
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


# --- invitations ---------------------------------------------------------------------


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
        user_id = await _insert_new_user(conn, user)
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


# --- projects --------------------------------------------------------------------------


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
            raise _conflict_on("slug", exc) from None
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
            old={k: _json(old.get(k)) for k in changes},
            new={k: _json(row.get(k)) for k in changes},
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


# --- admin paths (CLI): cross-tenant lookups on the owner connection --------------------


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
