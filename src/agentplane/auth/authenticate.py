"""Authenticating a request: a JWT access token or an API key (verified once and
cached per process), and the rate-limit allowance leased in batches from PostgreSQL."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from agentplane.auth import cache as keycache
from agentplane.auth import scopes as sc
from agentplane.auth import secrets, store
from agentplane.auth.models import Identity, Principal
from agentplane.db.pool import Database
from agentplane.errors import (
    RateLimited,
    Unauthorized,
)


@dataclass(frozen=True)
class Credential:
    kind: Literal["api_key", "jwt"]
    value: str




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
