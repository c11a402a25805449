"""Rules of the auth package: authenticate requests, sign in and out, rotate refresh
tokens, manage API keys, read the audit log."""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from agentplane import clock, crypto, pagination
from agentplane.auth import audit, passwords, secrets, store, totp
from agentplane.auth import cache as keycache
from agentplane.auth import scopes as sc
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import ApiKeyIn, Identity, Principal, TokensOut
from agentplane.config import Settings
from agentplane.db.pool import Connection, Database
from agentplane.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)

LOCKOUT_MAX_FAILURES = 5
LOCKOUT_WINDOW_SECONDS = 15 * 60
LOCKOUT_COOLDOWN_SECONDS = 15 * 60
BAD_LOGIN = "invalid email or password"


@dataclass(frozen=True)
class Credential:
    kind: Literal["api_key", "jwt"]
    value: str


# --- authenticating a request ------------------------------------------------------------


async def authenticate(db: Database, credential: Credential) -> Identity:
    """The credential's identity and its rate-limit state; at most one round trip."""
    if credential.kind == "api_key":
        return await _authenticate_key(db, secrets.digest(credential.value))
    claims = secrets.read_access_token(db.settings, credential.value)
    return await session_identity(db, claims)


async def session_identity(db: Database, claims: secrets.AccessClaims) -> Identity:
    """The identity of a login session (an access token's, or a dashboard cookie's):
    the membership as it is now, the session not revoked, the tenant's request counted."""
    row = await store.login_session_principal(
        db, claims.session_id, claims.user_id, claims.tenant_id
    )
    if row is None:
        raise Unauthorized("the login session has ended", headers=secrets.BEARER)
    principal = Principal(
        claims.tenant_id,
        claims.user_id,
        row["role"],
        sc.granted(row["role"], row["permissions"]),
        None,
    )
    limit, hits = row["tenant_limit"], row["tenant_hits"]
    identity = Identity(
        principal,
        row["email"],
        row["tenant_slug"],
        limit,
        max(0, limit - hits),
        row["reset_seconds"],
        claims.session_id,
    )
    if hits > limit:
        raise _rate_limited(identity)
    return identity


def _rate_limited(identity: Identity) -> RateLimited:
    return RateLimited(
        "rate limit exceeded; retry after the window resets",
        headers={"Retry-After": str(identity.reset_seconds), **rate_limit_headers(identity)},
    )


def _spend(
    entry: keycache.Entry, key: keycache.Lease, tenant: keycache.Lease, now: float
) -> Identity:
    """One request from both leases: the identity, or RateLimited if either is spent."""
    if key.left and tenant.left:
        key.left -= 1
        tenant.left -= 1
        tight, spent = (key if key.remaining <= tenant.remaining else tenant), False
    else:
        blocked = [x for x in (key, tenant) if x.refused] or [
            x for x in (key, tenant) if not x.left
        ]
        tight, spent = blocked[0], True
    identity = Identity(
        entry.principal,
        entry.email,
        entry.tenant_slug,
        tight.limit,
        tight.remaining,
        max(1, math.ceil(tight.until - now)),
    )
    if spent:
        raise _rate_limited(identity)
    return identity


def _usable(lease: keycache.Lease | None, now: float) -> bool:
    """Still this window's, and either holding allowance or known to be spent."""
    return lease is not None and lease.until > now and (lease.left > 0 or lease.refused)


async def _authenticate_key(db: Database, digest: bytes) -> Identity:
    cache = keycache.cache_for(db)
    now = time.monotonic()
    entry = cache.get(digest, now)
    if entry is not None:
        key = cache.leases.get(entry.principal.api_key_id)  # type: ignore[arg-type]
        tenant = cache.leases.get(entry.principal.tenant_id)
        if _usable(key, now) and _usable(tenant, now):
            return _spend(entry, key, tenant, now)  # type: ignore[arg-type]
    for attempt in range(3):
        epoch = cache.epoch()
        # Held leases are kept; only a missing or used-up one asks for a new block.
        key_id, tenant_id = cache.subjects.get(digest, (None, None))
        key = cache.leases.get(key_id) if key_id else None
        tenant = cache.leases.get(tenant_id) if tenant_id else None
        # (The last attempt asks for both: concurrent requests keep draining held ones.)
        last = attempt == 2
        key_max = 0 if _usable(key, now) and not last else keycache.MAX_BLOCK
        tenant_max = 0 if _usable(tenant, now) and not last else keycache.MAX_BLOCK
        row = await store.api_key_principal(db, digest, key_max, tenant_max)
        now = time.monotonic()
        if row is None:
            cache.forget(digest)
            raise Unauthorized("invalid, revoked or expired API key", headers=secrets.BEARER)
        # The key's scopes, cut down to what its owner's membership grants right now.
        scopes = frozenset(row["scopes"]) & sc.granted(row["role"], row["permissions"])
        principal = Principal(
            row["tenant_id"], row["user_id"], row["role"], scopes, row["api_key_id"]
        )
        expires = row["expires_at"]
        entry = keycache.Entry(
            principal,
            row["email"],
            row["tenant_slug"],
            expires.timestamp() if expires is not None else None,
            now + keycache.TTL_SECONDS,
        )
        until = now + row["window_left"]
        key = _lease(
            cache,
            row["api_key_id"],
            key_max,
            row["key_limit"],
            row["key_hits"],
            row["key_granted"],
            until,
        )
        tenant = _lease(
            cache,
            row["tenant_id"],
            tenant_max,
            row["tenant_limit"],
            row["tenant_hits"],
            row["tenant_granted"],
            until,
        )
        if key is None or tenant is None:
            continue  # a held lease went stale or was spent meanwhile: ask again
        cache.subjects[digest] = (principal.api_key_id, principal.tenant_id)  # type: ignore[assignment]
        cache.put(digest, entry, epoch)
        return _spend(entry, key, tenant, now)
    raise RuntimeError("rate-limit leases kept changing")  # pragma: no cover


def _lease(
    cache: keycache.KeyCache,
    subject: UUID,
    asked: int,
    limit: int,
    hits: int | None,
    granted: int,
    until: float,
) -> keycache.Lease | None:
    """The subject's lease after a lookup, or None when a held one has gone stale."""
    held = cache.leases.get(subject)
    if held is not None and (held.limit != limit or held.until < until - 1800):
        cache.leases.pop(subject, None)  # another limit or window: its rest is void
        held = None
    if asked:
        if hits is None:  # not consulted (the key was refused first): keep nothing
            return keycache.Lease(limit, 0, 0, until)
        refused = not granted and hits >= limit
        if held is not None and not held.refused and not refused:
            # Concurrent requests of this process leased too: pool the blocks.
            held.left += granted
            held.hits = max(held.hits, hits)
            return held
        lease = keycache.Lease(limit, hits, granted, until, refused=refused)
        if granted or refused:
            cache.leases[subject] = lease
        return lease
    return held if held is not None and (held.left or held.refused) else None


def rate_limit_headers(identity: Identity) -> dict[str, str]:
    return {
        "RateLimit-Limit": str(identity.limit),
        "RateLimit-Remaining": str(identity.remaining),
        "RateLimit-Reset": str(identity.reset_seconds),
    }


# --- signing in ----------------------------------------------------------------------------


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
        secret = crypto.decrypt(db.settings, found["mfa_secret"], _mfa_context(found["user_id"]))
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
        tokens = await start_session(db.settings, conn, tenant_id, user_id, origin)
        await store.touch_last_login(conn, user_id)
        await audit.record(
            conn,
            tenant_id,
            "login",
            user_id=user_id,
            resource_type="user",
            resource_id=user_id,
            origin=origin,
        )
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
        tokens = await start_session(db.settings, conn, tenant_id, principal.user_id, origin)
        await audit.record(
            conn,
            tenant_id,
            "login",
            user_id=principal.user_id,
            resource_type="user",
            resource_id=principal.user_id,
            details={"switched_from": identity.tenant_slug},
            origin=origin,
        )
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


# --- API keys ---------------------------------------------------------------------------


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


# --- audit log --------------------------------------------------------------------------


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


# --- two-factor sign-in (TOTP) -------------------------------------------------------------


def _mfa_context(user_id: UUID) -> str:
    return f"users.mfa_secret:{user_id}"


async def _reauthenticate(db: Database, identity: Identity, password: str) -> dict[str, Any]:
    """The signed-in user's MFA state, once the password proves it is them at the keyboard."""
    principal = identity.principal
    if identity.session_id is None or principal.user_id is None:
        raise Forbidden("two-factor settings change only from a signed-in session, not an API key")
    async with db.tenant_connection(principal.tenant_id) as conn:
        state = await store.mfa_state(conn, principal.user_id)
    if not await passwords.verify_password(state["password_hash"], password):
        raise Unauthorized("the password is wrong")
    return state


async def mfa_setup(
    db: Database, identity: Identity, password: str, origin: Origin = NOWHERE
) -> dict[str, str]:
    """A new TOTP secret, pending until `mfa_enable` sees a code made from it."""
    state = await _reauthenticate(db, identity, password)
    if state["mfa_enabled"]:
        raise Conflict("two-factor sign-in is on already; turn it off first to change the secret")
    principal = identity.principal
    assert principal.user_id is not None
    secret = totp.new_secret()
    sealed = crypto.encrypt(db.settings, secret, _mfa_context(principal.user_id))
    async with db.tenant_connection(principal.tenant_id) as conn:
        await store.set_mfa(conn, principal.user_id, enabled=False, secret=sealed, step=None)
    return {"secret": secret, "otpauth_uri": totp.uri(secret, state["email"])}


async def mfa_enable(db: Database, identity: Identity, code: str, origin: Origin = NOWHERE) -> None:
    principal = identity.principal
    if identity.session_id is None or principal.user_id is None:
        raise Forbidden("two-factor settings change only from a signed-in session, not an API key")
    async with db.tenant_connection(principal.tenant_id) as conn:
        state = await store.mfa_state(conn, principal.user_id)
        if state["mfa_enabled"]:
            raise Conflict("two-factor sign-in is on already")
        if state["mfa_secret"] is None:
            raise Conflict("no pending secret: call /v1/auth/mfa/setup first")
        secret = crypto.decrypt(db.settings, state["mfa_secret"], _mfa_context(principal.user_id))
        step = totp.matching_step(secret, code)
        if step is None:
            raise ValidationFailed(
                "the code does not match the secret (check the device's clock)",
                errors=[{"field": "code", "message": "does not match"}],
            )
        await store.set_mfa(
            conn, principal.user_id, enabled=True, secret=state["mfa_secret"], step=step
        )
        await audit.record(
            conn,
            principal.tenant_id,
            "mfa_enabled",
            actor=principal,
            resource_type="user",
            resource_id=principal.user_id,
            origin=origin,
        )


async def mfa_disable(
    db: Database, identity: Identity, password: str, code: str, origin: Origin = NOWHERE
) -> None:
    state = await _reauthenticate(db, identity, password)
    principal = identity.principal
    assert principal.user_id is not None
    if not state["mfa_enabled"]:
        raise Conflict("two-factor sign-in is off already")
    secret = crypto.decrypt(db.settings, state["mfa_secret"], _mfa_context(principal.user_id))
    if totp.matching_step(secret, code) is None:
        raise Unauthorized("invalid one-time code")
    async with db.tenant_connection(principal.tenant_id) as conn:
        await store.set_mfa(conn, principal.user_id, enabled=False, secret=None, step=None)
        await audit.record(
            conn,
            principal.tenant_id,
            "mfa_disabled",
            actor=principal,
            resource_type="user",
            resource_id=principal.user_id,
            origin=origin,
        )
