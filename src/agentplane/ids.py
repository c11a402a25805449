"""Short ids: a unique start of an id stands for the id, as git takes a commit's.

A prefix is turned into the range of ids that start with it, so that the lookup is a
range scan on the primary key (uuid order is byte order, the order of the hex text).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from uuid import UUID

from agentplane.errors import NotFound, ValidationFailed

MIN_PREFIX = 4
_HEX = re.compile(r"[0-9a-f]{1,32}")


def hex_digits(ref: str, noun: str, field: str | None) -> str:
    """ref's hex digits; field names the parameter it came in (None: a command's id)."""
    digits = ref.strip().lower().replace("-", "")
    if not _HEX.fullmatch(digits):
        if field is None:
            raise ValidationFailed(f"{ref!r} is not a {noun} id (hex digits and dashes)")
        message = f"is not the start of a {noun} id (hex digits and dashes)"
        raise ValidationFailed(f"{field}: {ref!r} {message}",
                               errors=[{"field": field, "value": ref, "message": message}])
    return digits


def bounds(prefix: str, noun: str = "record") -> tuple[UUID, UUID]:
    """The first and last id that start with prefix (a listing's `id_prefix`)."""
    digits = hex_digits(prefix, noun, "id_prefix")
    return UUID(digits.ljust(32, "0")), UUID(digits.ljust(32, "f"))


def whole(ref: str) -> UUID | None:
    """ref as an id when it is a whole one (else None: a short id, or not an id)."""
    try:
        return UUID(ref.strip())
    except ValueError:
        return None


def optional_bounds(prefix: str | None, noun: str = "record") -> tuple[UUID | None, UUID | None]:
    """bounds(prefix), or (None, None) without one: the shape a listing's query takes."""
    return bounds(prefix, noun) if prefix else (None, None)


async def resolve(ref: str, noun: str, starting: Callable[[str], Awaitable[list[str]]]) -> str:
    """The full id that ref names: ref itself when it is a whole id, else the one id that
    starting(prefix) finds (it returns up to two ids that start with the prefix)."""
    digits = hex_digits(ref, noun, None)
    if len(digits) == 32:
        return str(UUID(digits))
    if len(digits) < MIN_PREFIX:
        raise ValidationFailed(f"{ref!r}: give at least {MIN_PREFIX} characters of the "
                               f"{noun}'s id")
    found = await starting(digits)
    if not found:
        raise NotFound(f"no {noun} whose id starts with {ref.strip()!r}")
    if len(found) > 1:
        raise ValidationFailed(f"{ref.strip()!r} is the start of several {noun}s' ids: "
                               "give more of it")
    return str(found[0])
