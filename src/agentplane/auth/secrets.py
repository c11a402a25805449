"""Credentials we mint: API keys, refresh and invitation tokens, JWT access tokens,
and the server's signing secret.

Only SHA-256 digests of keys and tokens are stored. They are 256-bit random values, so
a fast hash is enough (nothing to brute-force) and lookups by digest leak no timing
about the secret itself; comparisons of secrets in Python use hmac.compare_digest.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import jwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from agentplane.config import Settings
from agentplane.errors import Unauthorized

API_KEY_PREFIX = "ap_"
REFRESH_PREFIX = "rt_"
INVITATION_PREFIX = "inv_"
JWT_ALGORITHM = "HS256"
JWT_AUDIENCE = "agentplane"
ACCESS_TTL_SECONDS = 15 * 60
REFRESH_TTL_SECONDS = 30 * 24 * 3600


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def email_digest(email: str) -> bytes:
    """The key of an address's sign-in lookups and lockout (trimmed, lower-cased)."""
    return hashlib.sha256(email.strip().lower().encode()).digest()


def new_api_key() -> tuple[str, str, bytes]:
    """(plaintext, 8-character display prefix, digest). The plaintext is shown once."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[:8], digest(key)


def new_token(prefix: str) -> tuple[str, bytes]:
    token = prefix + secrets.token_urlsafe(32)
    return token, digest(token)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# --- the signing secret -----------------------------------------------------------

_cache: dict[Path, bytes] = {}


def signing_secret(settings: Settings) -> bytes:
    """AGENTPLANE_SECRET_KEY, else <home>/keys/secret_key, generated (0600) on first use.

    Every process on one home reads the same file, so tokens work across processes; the
    file is created with O_EXCL so two processes starting at once agree on one secret.
    """
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value().encode()
    path = settings.home / "keys" / "secret_key"
    if path in _cache:
        return _cache[path]
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        value = path.read_bytes().strip()
    else:
        value = secrets.token_urlsafe(48).encode()
        with os.fdopen(fd, "wb") as f:
            f.write(value)
    if not value:  # a racing writer has not written yet
        time.sleep(0.05)
        value = path.read_bytes().strip()
    _cache[path] = value
    return value


def _derive(settings: Settings, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(
        signing_secret(settings)
    )


# --- JWT access tokens ------------------------------------------------------------


@dataclass(frozen=True)
class AccessClaims:
    user_id: UUID
    tenant_id: UUID
    session_id: UUID


# An access token and a session cookie carry the same claims under keys of their own
# and a `typ` of their own: neither is accepted as the other.
TOKEN_KINDS = {"access": b"jwt", "web": b"web-session"}


def _sign(settings: Settings, claims: AccessClaims, kind: str, ttl_s: int) -> str:
    now = int(time.time())
    payload = {
        "sub": str(claims.user_id),
        "tid": str(claims.tenant_id),
        "sid": str(claims.session_id),
        "aud": JWT_AUDIENCE,
        "iat": now,
        "exp": now + ttl_s,
        "typ": kind,
    }
    return jwt.encode(payload, _derive(settings, TOKEN_KINDS[kind]), algorithm=JWT_ALGORITHM)


def _verify(settings: Settings, token: str, kind: str) -> AccessClaims:
    """The claims; jwt.InvalidTokenError (ExpiredSignatureError when only the time is
    past), ValueError or TypeError when it is not a valid token of this kind."""
    payload = jwt.decode(
        token,
        _derive(settings, TOKEN_KINDS[kind]),
        algorithms=[JWT_ALGORITHM],
        audience=JWT_AUDIENCE,
        options={"require": ["exp", "sub", "tid", "sid"]},
    )
    if payload.get("typ") != kind:
        raise jwt.InvalidTokenError(f"not a token of kind {kind}")
    return AccessClaims(UUID(payload["sub"]), UUID(payload["tid"]), UUID(payload["sid"]))


def issue_access_token(settings: Settings, claims: AccessClaims) -> str:
    return _sign(settings, claims, "access", ACCESS_TTL_SECONDS)


def read_access_token(settings: Settings, token: str) -> AccessClaims:
    try:
        return _verify(settings, token, "access")
    except jwt.ExpiredSignatureError:
        raise Unauthorized("access token expired", headers=BEARER) from None
    except (jwt.InvalidTokenError, ValueError, TypeError):
        raise Unauthorized("malformed or invalid access token", headers=BEARER) from None


BEARER = {"WWW-Authenticate": 'Bearer realm="agentplane"'}


# --- the dashboard's session cookie -------------------------------------------------

WEB_SESSION_TTL_SECONDS = 12 * 3600


def issue_web_session(settings: Settings, claims: AccessClaims) -> str:
    """A browser's session: the login session's claims, signed under a key of its own
    (an access token is not a cookie, nor a cookie an access token)."""
    return _sign(settings, claims, "web", WEB_SESSION_TTL_SECONDS)


def read_web_session(settings: Settings, value: str) -> AccessClaims | None:
    """The claims of a session cookie; None when it is expired, altered or not one."""
    try:
        return _verify(settings, value, "web")
    except (jwt.InvalidTokenError, ValueError, TypeError):
        return None


def csrf_token(settings: Settings, session_id: UUID) -> str:
    """The form token of a login session: the same for all its pages, useless for another."""
    mac = hmac.new(_derive(settings, b"csrf"), session_id.bytes, hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


# --- TOTP (sealed at rest by agentplane.crypto) ------------------------------------


def new_totp_secret() -> str:
    return base64.b32encode(secrets.token_bytes(20)).decode().rstrip("=")
