"""Pydantic types of messages: what is sent, what a receiver gets, each copy's state."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

TOPIC = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$"
TYPE = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$"
DAY_S = 86_400
DeliveryStatus = Literal["pending", "leased", "acked", "dead", "expired"]


class Destination(BaseModel):
    """Exactly one of: an agent (any of its live instances), an instance, a topic (every
    live instance subscribed to it) or a broadcast (every live instance of the tenant, or
    of a project's agents)."""

    model_config = ConfigDict(extra="forbid")

    agent: str | None = Field(default=None, min_length=1, max_length=50)
    instance: UUID | None = None
    topic: str | None = Field(default=None, pattern=TOPIC)
    broadcast: bool | None = None
    project: UUID | None = Field(default=None, description="a broadcast to this project's agents")

    @model_validator(mode="after")
    def _one(self) -> Destination:
        named = [k for k in ("agent", "instance", "topic") if getattr(self, k) is not None]
        if self.broadcast:
            named.append("broadcast")
        if len(named) != 1:
            raise ValueError("name exactly one of agent, instance, topic or broadcast: true")
        if self.project is not None and not self.broadcast:
            raise ValueError("project scopes a broadcast only")
        return self

    @property
    def kind(self) -> str:
        if self.broadcast:
            return "broadcast"
        return next(k for k in ("agent", "instance", "topic") if getattr(self, k) is not None)


class Sender(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance: UUID = Field(description="the sending agent instance")


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: Destination
    from_: Sender | None = Field(default=None, alias="from",
                                 description="absent when an API client sends")
    type: str = Field(pattern=TYPE, description="e.g. task.request, review.done")
    priority: int = Field(default=1, ge=0, le=9, description="higher first")
    payload: Any = Field(default_factory=dict)
    correlation_id: str | None = Field(default=None, min_length=1, max_length=255)
    reply_to: UUID | None = Field(default=None, description="the instance replies go to")
    requires_ack: bool = True
    ttl_s: int | None = Field(default=None, gt=0, le=30 * DAY_S,
                              description="seconds after it is due; then it is expired")
    max_retries: int = Field(default=3, ge=0, le=100)
    delay_s: float = Field(default=0, ge=0, le=30 * DAY_S)
    run_id: UUID | None = Field(default=None, description="the run it belongs to (its events)")
    task_id: UUID | None = None


class Delivery(BaseModel):
    """One receiver's copy of a message."""

    id: UUID
    agent: str
    instance_id: UUID | None
    status: DeliveryStatus
    attempts: int
    max_retries: int
    leased_to: UUID | None
    lease_until: datetime | None
    last_error: str | None
    history: list[dict[str, Any]]
    delivered_at: datetime | None
    acked_at: datetime | None
    expires_at: datetime | None


class Message(BaseModel):
    id: UUID
    to: dict[str, Any]
    from_agent: str | None
    from_instance: UUID | None
    type: str
    priority: int
    payload: Any
    correlation_id: str | None
    reply_to: UUID | None
    requires_ack: bool
    ttl_s: int | None
    max_retries: int
    run_id: UUID | None
    task_id: UUID | None
    available_at: datetime
    expires_at: datetime | None
    created_at: datetime
    status: str = Field(description="its copies' least advanced status (pending first)")
    deliveries: list[Delivery] | None = None


class MessagePage(BaseModel):
    items: list[Message]
    next_cursor: str | None


class Received(BaseModel):
    """A message as its receiver gets it: leased until `lease_until`, to be acked (or
    nacked) by the receiving instance; `attempt` counts deliveries of this copy. The
    message id is the receiver's idempotency key."""

    id: UUID
    delivery_id: UUID
    attempt: int
    lease_until: datetime | None
    type: str
    priority: int
    payload: Any
    correlation_id: str | None
    reply_to: UUID | None
    from_agent: str | None
    from_instance: UUID | None
    run_id: UUID | None
    task_id: UUID | None
    created_at: datetime


class Nack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance: UUID
    error: str = Field(default="nacked", min_length=1, max_length=2000)
    delay_s: float | None = Field(default=None, ge=0, le=DAY_S,
                                  description="absent: a backoff doubling from 0.5 s to 60 s")


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance: UUID


class DeadMessage(BaseModel):
    delivery_id: UUID
    message: Message
    agent: str
    instance_id: UUID | None
    attempts: int
    last_error: str | None
    history: list[dict[str, Any]]
    created_at: datetime


class DeadPage(BaseModel):
    items: list[DeadMessage]
    next_cursor: str | None


class Subscription(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(pattern=TOPIC)
