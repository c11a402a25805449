"""Signing in and out: passwords with a lockout, the second factor at sign-in, refresh
tokens rotated by family (a reused one revokes its whole login session)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from agentplane import clock, crypto
from agentplane.auth import audit, passwords, secrets, store, totp
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import Identity, Principal, TokensOut
from agentplane.config import Settings
from agentplane.db.pool import Connection, Database
from agentplane.errors import (
    BadRequest,
    Forbidden,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)

LOCKOUT_MAX_FAILURES = 5
LOCKOUT_WINDOW_SECONDS = 15 * 60
LOCKOUT_COOLDOWN_SECONDS = 15 * 60
BAD_LOGIN = "invalid email or password"


async def start_session(
    settings: Settings,
    conn: Connection,
    tenant_id: UUID,
    user_id: UUID,
    origin: Origin,
    family_id: UUID | None = None,
) -> TokensOut:
    family = family_id or uuid.uuid4()
    refresh, refresh_hash = secrets.new_token(secrets.REFRESH_PREFIX)
    await store.insert_login_session(
        conn,
        tenant_id=tenant_id,
        user_id=user_id,
        family_id=family,
        token_hash=refresh_hash,
        ttl_seconds=secrets.REFRESH_TTL_SECONDS,
        ip=origin.ip,
        user_agent=origin.user_agent,
    )
    access = secrets.issue_access_token(settings, secrets.AccessClaims(user_id, tenant_id, family))
    return TokensOut(
        access_token=access,
        refresh_token=refresh,
        expires_in=secrets.ACCESS_TTL_SECONDS,
        tenant_id=tenant_id,
        user_id=user_id,
    )


async def sign_in(
    settings: Settings,
    conn: Connection,
    tenant_id: UUID,
    user_id: UUID,
    origin: Origin,
    details: dict | None = None,
) -> TokensOut:
    """A login session, with its `login` entry in the audit log."""
    tokens = await start_session(settings, conn, tenant_id, user_id, origin)
    await audit.record(
        conn,
        tenant_id,
        "login",
        user_id=user_id,
        resource_type="user",
        resource_id=user_id,
        details=details,
        origin=origin,
    )
    return tokens


def _locked(until: datetime) -> RateLimited:
    wait = max(1, int((until - clock.now()).total_seconds()) + 1)
    return RateLimited(
        "too many failed sign-ins for this account; try again later",
        headers={"Retry-After": str(wait)},
    )


@dataclass(frozen=True)
class SignIn:
    """A verified password (and one-time code, for an account with two-factor sign-in)."""

    user_id: UUID
    mfa_step: int | None = None
    """The TOTP step the code matched: spent in the sign-in's transaction."""


async def check_password(
    db: Database, email: str, password: str, origin: Origin, code: str | None = None
) -> SignIn:
    """The account if the password (and code) are right; counts failures and locks out."""
    email_hash = secrets.email_digest(email)
    async with db.app_connection() as conn:
        found = await store.login_lookup(conn, email, email_hash)
    if found["locked_until"] is not None:
        raise _locked(found["locked_until"])
    # An unknown account is verified against a dummy hash: same time, same answer.
    if not await passwords.verify_password(found["password_hash"], password):
        await _login_failed(db, email_hash, found["user_id"], origin)
        raise Unauthorized(BAD_LOGIN)
    step = None
    if found["mfa_secret"] is not None:
        if not code:
            raise Unauthorized(
                "this account signs in with a one-time code too: send it as `totp`",
                mfa_required=True,
            )
        context = totp.secret_context(found["user_id"])
        secret = crypto.decrypt(db.settings, found["mfa_secret"], context)
        step = totp.matching_step(secret, code)
        if step is None:
            await _login_failed(db, email_hash, found["user_id"], origin)
            raise Unauthorized("invalid one-time code", mfa_required=True)
    async with db.app_connection() as conn:
        await store.login_succeeded(conn, email_hash)
    return SignIn(found["user_id"], step)


async def _login_failed(db: Database, email_hash: bytes, user_id: UUID | None, origin: Origin):
    async with db.app_connection() as conn:
        await store.login_failed(
            conn,
            email_hash,
            user_id,
            origin.ip,
            origin.user_agent,
            LOCKOUT_MAX_FAILURES,
            LOCKOUT_WINDOW_SECONDS,
            LOCKOUT_COOLDOWN_SECONDS,
        )


async def spend_code(conn: Connection, signin: SignIn) -> None:
    # Inside the sign-in's tenant transaction: a code seen twice fails the second time.
    if signin.mfa_step is not None and not await store.spend_mfa_step(
        conn, signin.user_id, signin.mfa_step
    ):
        raise Unauthorized("this one-time code was used already; wait for the next one")


async def login(
    db: Database,
    email: str,
    password: str,
    tenant: str | None,
    origin: Origin = NOWHERE,
    code: str | None = None,
    *,
    first_tenant: bool = False,
) -> TokensOut:
    """Sign in to `tenant` (a slug); to the account's only tenant when none is named, or
    with `first_tenant` to its oldest membership (the dashboard, which switches later)."""
    signin = await check_password(db, email, password, origin, code)
    user_id = signin.user_id
    async with db.app_connection() as conn:
        tenants = await store.user_tenants(conn, user_id)
    if tenant is not None:
        tenants = [t for t in tenants if t["slug"] == tenant]
        if not tenants:
            raise Forbidden("you are not a member of this tenant")
    if not tenants:
        raise Forbidden("this account belongs to no active tenant")
    if len(tenants) > 1 and not first_tenant:
        slugs = ", ".join(t["slug"] for t in tenants)
        raise ValidationFailed(
            f"tenant is required: this account belongs to {slugs}",
            errors=[{"field": "tenant", "message": "required"}],
        )
    tenant_id = tenants[0]["tenant_id"]
    async with db.tenant_connection(tenant_id) as conn:
        await spend_code(conn, signin)
        tokens = await sign_in(db.settings, conn, tenant_id, user_id, origin)
        await store.touch_last_login(conn, user_id)
    return tokens


async def tenants_of(db: Database, user_id: UUID) -> list[dict[str, Any]]:
    """The account's active tenants (tenant_id, slug, role), oldest membership first."""
    async with db.app_connection() as conn:
        return await store.user_tenants(conn, user_id)


async def switch_tenant(
    db: Database, identity: Identity, slug: str, origin: Origin = NOWHERE
) -> TokensOut:
    """Move a signed-in user to another of their tenants: a login session there, the
    current one ended (a login session belongs to one tenant)."""
    principal = identity.principal
    if identity.session_id is None or principal.user_id is None:
        raise BadRequest("switching tenants takes a login session, not an API key")
    found = [t for t in await tenants_of(db, principal.user_id) if t["slug"] == slug]
    if not found:
        raise Forbidden("you are not a member of this tenant")
    tenant_id = found[0]["tenant_id"]
    async with db.tenant_connection(tenant_id) as conn:
        tokens = await sign_in(db.settings, conn, tenant_id, principal.user_id, origin,
                               details={"switched_from": identity.tenant_slug})
    if tenant_id != principal.tenant_id:
        await logout(db, identity, origin)
    return tokens


async def refresh(db: Database, token: str, origin: Origin = NOWHERE) -> TokensOut:
    """Rotate: the presented token is spent and a new one of the same family issued.

    A token presented after it was rotated means two parties hold it: the whole
    family (the login session) is revoked and the reuse audited.
    """
    token_hash = secrets.digest(token)
    async with db.app_connection() as conn:
        tenant_id = await store.refresh_tenant(conn, token_hash)
    if tenant_id is None:
        raise Unauthorized("invalid refresh token")
    reused = False
    async with db.tenant_connection(tenant_id) as conn:
        session = await store.login_session_for_update(conn, token_hash)
        if session is None or session["revoked_at"] is not None or session["expired"]:
            raise Unauthorized("invalid refresh token")
        if session["rotated_at"] is not None:
            reused = True
            await store.revoke_family(conn, session["family_id"], "reuse_detected")
            await audit.record(
                conn,
                tenant_id,
                "token_reuse_detected",
                user_id=session["user_id"],
                resource_type="login_session",
                resource_id=session["family_id"],
                origin=origin,
            )
        else:
            await store.mark_rotated(conn, session["id"])
            tokens = await start_session(
                db.settings, conn, tenant_id, session["user_id"], origin, session["family_id"]
            )
            await audit.record(
                conn,
                tenant_id,
                "token_refreshed",
                user_id=session["user_id"],
                resource_type="login_session",
                resource_id=session["family_id"],
                origin=origin,
            )
    if reused:  # raised after the commit, so the revocation sticks
        raise Unauthorized("refresh token already used; the login session has been revoked")
    return tokens


async def logout(db: Database, identity: Identity, origin: Origin = NOWHERE) -> None:
    principal = identity.principal
    if identity.session_id is None:
        raise BadRequest("logout ends a login session; API keys are revoked instead")
    async with db.tenant_connection(principal.tenant_id) as conn:
        await store.revoke_family(conn, identity.session_id, "logout")
        await audit.record(
            conn,
            principal.tenant_id,
            "logout",
            actor=principal,
            resource_type="login_session",
            resource_id=identity.session_id,
            origin=origin,
        )


async def logout_everywhere(db: Database, principal: Principal, origin: Origin = NOWHERE) -> int:
    if principal.user_id is None:
        raise BadRequest("no user to log out")
    async with db.tenant_connection(principal.tenant_id) as conn:
        count = await store.revoke_user_sessions(conn, principal.user_id)
        await audit.record(
            conn,
            principal.tenant_id,
            "logout_all",
            actor=principal,
            resource_type="user",
            resource_id=principal.user_id,
            details={"sessions": count},
            origin=origin,
        )
    return count
