"""The cursor of every paged listing (jobs, dead letters, runs, the audit log).

A listing pages newest first by (timestamp, id); its `next_cursor` names the last row of
the page, and the next page starts after it. The cursor is opaque to clients: base64url,
unpadded, of "<ISO timestamp>|<uuid>" (padded ones, as the queue and the runs once
returned, are read too). One the API did not return is refused with InvalidCursor: a 422
problem naming the `cursor` parameter.
"""

from __future__ import annotations

import base64
from datetime import datetime
from uuid import UUID

from agentplane.errors import ValidationFailed

Position = tuple[datetime, UUID]


class InvalidCursor(ValidationFailed):
    """A `cursor` this API did not return, or one that was altered."""

    MESSAGE = "is not one this API returned"

    def __init__(self, cursor: str) -> None:
        super().__init__(
            f"cursor: {self.MESSAGE}",
            errors=[{"field": "cursor", "value": cursor[:200], "message": self.MESSAGE}],
        )


def encode(at: datetime, id_: UUID) -> str:
    """The cursor of the row at (at, id_)."""
    raw = f"{at.isoformat()}|{id_}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> Position:
    """The (timestamp, id) a cursor names; InvalidCursor if it names none."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, id_ = raw.split("|")
        return datetime.fromisoformat(at), UUID(id_)
    except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
        raise InvalidCursor(cursor) from None
