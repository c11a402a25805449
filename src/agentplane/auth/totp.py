"""Time-based one-time passwords (RFC 6238: HMAC-SHA1, 30-second steps, 6 digits),
the kind every authenticator app reads from an otpauth:// URI."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import struct
import time
from urllib.parse import quote

STEP_SECONDS = 30
DIGITS = 6
DRIFT_STEPS = 1
"""Codes of the previous and the next step are accepted too: clocks drift."""


def new_secret() -> str:
    """A fresh 160-bit secret, base32 as authenticator apps expect it."""
    return base64.b32encode(secrets.token_bytes(20)).decode()


def step_at(when: float | None = None) -> int:
    return int((time.time() if when is None else when) // STEP_SECONDS)


def code(secret: str, step: int) -> str:
    key = base64.b32decode(secret)
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(number % 10**DIGITS).zfill(DIGITS)


def matching_step(secret: str, given: str, when: float | None = None) -> int | None:
    """The step whose code is `given` (within the allowed drift), else None.

    Every candidate is compared, in constant time, so timing tells nothing."""
    given = given.strip().replace(" ", "")
    now = step_at(when)
    found = None
    for step in range(now - DRIFT_STEPS, now + DRIFT_STEPS + 1):
        if hmac.compare_digest(code(secret, step), given.rjust(DIGITS, "x")[-DIGITS:]):
            found = step
    return found if len(given) == DIGITS else None


def uri(secret: str, account: str, issuer: str = "agentplane") -> str:
    label = quote(f"{issuer}:{account}")
    return f"otpauth://totp/{label}?secret={secret}&issuer={quote(issuer)}&digits={DIGITS}"


def secret_context(user_id: object) -> str:
    """What a user's TOTP secret is sealed with (crypto.encrypt's context): it opens for
    that user's row only."""
    return f"users.mfa_secret:{user_id}"
