"""Types of the event log: what a writer appends and what a reader gets."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import cached_property
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentplane.events.types import TERMINAL

TYPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")


class NewEvent(BaseModel):
    """An event to append; the log assigns its run's next sequence number and the time."""

    model_config = ConfigDict(frozen=True)

    type: str = Field(max_length=100)
    task_id: UUID | None = None
    agent: str | None = Field(default=None, max_length=255)
    message: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not TYPE_PATTERN.match(value):
            raise ValueError("an event type is lower-case dotted words, e.g. task.started")
        return value


class Event(BaseModel):
    """A stored event. `seq` is None only for a streamed, unstored llm.delta."""

    run_id: UUID
    seq: int | None
    type: str
    task_id: UUID | None = None
    agent: str | None = None
    message: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        # Read from the table or carried by a notification, whatever the session's
        # TimeZone: the same event serialises to the same bytes.
        return value.astimezone(UTC) if value.tzinfo is not None else value

    @cached_property
    def encoded(self) -> str:
        """The event as JSON, built once however many followers send it."""
        return self.model_dump_json()

    @cached_property
    def frame(self) -> bytes:
        """The event as a Server-Sent Event (`id` is `seq`), encoded once for every
        follower it is sent to."""
        head = "" if self.seq is None else f"id: {self.seq}\n"
        return f"{head}event: {self.type}\ndata: {self.encoded}\n\n".encode()

    @cached_property
    def terminal(self) -> bool:
        return self.type in TERMINAL


class EventPage(BaseModel):
    """A page of a run's history; pass `next_after` as `after` for the next page."""

    events: list[Event]
    next_after: int | None
    """The last sequence number of this page, None when the page is empty."""
