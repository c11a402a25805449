"""Password hashing (argon2id) and the password policy.

Policy: 12 to 256 characters, at least 5 different characters, and not the email,
the username or one of a few very common passwords. Length is what makes a password
strong; composition rules mostly make them harder to remember.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from agentplane.errors import ValidationFailed

MIN_LENGTH = 12
MAX_LENGTH = 256  # argon2 accepts more, but a megabyte "password" is a denial of service
COMMON = frozenset(
    {"password1234", "123456789012", "qwertyuiopas", "passwordpassword", "letmeinletmein"}
)

_hasher = PasswordHasher()  # argon2id, RFC 9106 low-memory profile
_dummy: list[str] = []


def _dummy_hash() -> str:
    """Verified against when the account does not exist, so both paths cost the same."""
    if not _dummy:
        _dummy.append(_hasher.hash("no such account, but the same work"))
    return _dummy[0]


def check_policy(password: str, *, email: str = "", username: str = "") -> None:
    problem = None
    if len(password) < MIN_LENGTH:
        problem = f"must be at least {MIN_LENGTH} characters"
    elif len(password) > MAX_LENGTH:
        problem = f"must be at most {MAX_LENGTH} characters"
    elif len(set(password)) < 5:
        problem = "must contain at least 5 different characters"
    elif password.lower() in COMMON or password.lower() in {email.lower(), username.lower()}:
        problem = "is too easy to guess"
    if problem:
        raise ValidationFailed(
            f"password {problem}", errors=[{"field": "password", "message": problem}]
        )


async def hash_password(password: str) -> str:
    # argon2 takes tens of milliseconds of CPU: keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(stored: str | None, password: str) -> bool:
    """Constant-time (argon2 verifies in constant time); a missing hash costs the same."""

    def verify() -> bool:
        try:
            return _hasher.verify(stored or _dummy_hash(), password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)
