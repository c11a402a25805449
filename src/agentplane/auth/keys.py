"""API keys: created with scopes no wider than the owner's role, listed by prefix, revoked
(stored as SHA-256: the secret is shown once, at creation)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentplane import clock
from agentplane.auth import audit, secrets, store
from agentplane.auth import cache as keycache
from agentplane.auth import scopes as sc
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import ApiKeyIn, Principal
from agentplane.db.pool import Database
from agentplane.errors import (
    Forbidden,
    NotFound,
    ValidationFailed,
)


async def create_key(
    db: Database,
    tenant_id: UUID,
    body: ApiKeyIn,
    actor: Principal | None,
    origin: Origin = NOWHERE,
) -> tuple[dict[str, Any], str]:
    """(the key's row, the plaintext key). `actor` None: an administrator at the CLI."""
    owner_id = body.user_id or (actor.user_id if actor else None)
    if owner_id is None:
        raise ValidationFailed("user_id is required", errors=[{"field": "user_id"}])
    if body.expires_at is not None and body.expires_at <= clock.now():
        raise ValidationFailed(
            "expires_at must be in the future",
            errors=[{"field": "expires_at", "message": "in the past"}],
        )
    requested = set(body.scopes)
    if actor is not None and not requested <= actor.scopes:
        extra = ", ".join(sorted(requested - actor.scopes))
        raise Forbidden(f"cannot create a key with scopes you do not have: {extra}")
    key, prefix, key_hash = secrets.new_api_key()
    async with db.tenant_connection(tenant_id) as conn:
        member = await store.member_grants(conn, owner_id)
        if member is None:
            raise NotFound("member not found")
        lacking = requested - sc.granted(member["role"], member["permissions"])
        if lacking:
            raise Forbidden(
                f"a key cannot grant more than its owner has: {', '.join(sorted(lacking))}"
            )
        row = await store.insert_api_key(
            conn,
            tenant_id=tenant_id,
            user_id=owner_id,
            key_hash=key_hash,
            key_prefix=prefix,
            name=body.name,
            description=body.description,
            scopes=sorted(requested),
            rate_limit_per_hour=body.rate_limit_per_hour,
            llm_rpm=body.llm_rpm,
            llm_tpm=body.llm_tpm,
            expires_at=body.expires_at,
            created_by=actor.user_id if actor else None,
        )
        await audit.record(
            conn,
            tenant_id,
            "api_key_created",
            actor=actor,
            resource_type="api_key",
            resource_id=row["id"],
            new={
                "name": body.name,
                "prefix": prefix,
                "scopes": sorted(requested),
                "user_id": str(owner_id),
            },
            origin=origin,
        )
    return row, key


async def list_keys(
    db: Database, tenant_id: UUID, include_revoked: bool = False
) -> list[dict[str, Any]]:
    async with db.tenant_connection(tenant_id) as conn:
        return await store.list_api_keys(conn, include_revoked=include_revoked)


async def get_key(db: Database, tenant_id: UUID, key_id: UUID) -> dict[str, Any]:
    async with db.tenant_connection(tenant_id) as conn:
        row = await store.get_api_key(conn, key_id)
    if row is None:
        raise NotFound("API key not found")
    return row


async def revoke_key(
    db: Database,
    tenant_id: UUID,
    key_id: UUID,
    actor: Principal | None,
    origin: Origin = NOWHERE,
) -> dict[str, Any]:
    async with db.tenant_connection(tenant_id) as conn:
        row = await store.revoke_api_key(conn, key_id)
        if row is None:
            existing = await store.get_api_key(conn, key_id)
            if existing is None:
                raise NotFound("API key not found")
            return existing  # already revoked: revoking again changes nothing
        await audit.record(
            conn,
            tenant_id,
            "api_key_revoked",
            actor=actor,
            resource_type="api_key",
            resource_id=key_id,
            old={"is_active": True},
            new={"is_active": False},
            origin=origin,
        )
    # Committed: this process forgets the key at once, the others on notification.
    keycache.invalidate(db, key_id=key_id)
    return row
