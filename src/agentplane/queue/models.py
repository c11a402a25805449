"""Pydantic types of the queue: jobs, dead letters, schedules, limits."""

from __future__ import annotations

import json
import math
from datetime import datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator

QUEUE_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
MAX_DELAY_SECONDS = 366 * 24 * 3600  # further than a year ahead is a mistake, not a plan
MAX_PAYLOAD_BYTES = 1_000_000


class Status(StrEnum):
    pending = "pending"
    queued = "queued"
    running = "running"
    paused = "paused"
    completed = "completed"
    failed = "failed"
    stuck = "stuck"
    cancelled = "cancelled"
    dead_letter = "dead_letter"


CLAIMABLE = frozenset({Status.pending, Status.queued, Status.failed, Status.stuck})
FINISHED = frozenset({Status.completed, Status.cancelled, Status.dead_letter})


class Priority(StrEnum):
    critical = "critical"
    high = "high"
    normal = "normal"
    low = "low"
    background = "background"


class JobSpec(BaseModel):
    """What to enqueue. Validated before anything is written."""

    model_config = ConfigDict(extra="forbid")

    type: str = Field(min_length=1, max_length=200)
    payload: Any = Field(default_factory=dict)
    queue: str = Field(default="default", pattern=QUEUE_PATTERN)
    priority: Priority = Priority.normal
    delay: float = Field(default=0, ge=0, le=MAX_DELAY_SECONDS)
    """Seconds from now before the job may start."""
    max_attempts: int = Field(default=3, ge=1, le=1000)
    backoff_base: float = Field(default=1.0, ge=0, le=3600)
    backoff_max: float = Field(default=300.0, ge=0, le=7 * 24 * 3600)
    timeout: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=255)
    concurrency_key: str | None = Field(default=None, min_length=1, max_length=255)

    @field_validator("payload")
    @classmethod
    def _json(cls, value: Any) -> Any:
        try:
            text = json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"payload is not JSON-serialisable: {exc}") from None
        if len(text) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"payload is larger than {MAX_PAYLOAD_BYTES} bytes")
        return value

    @field_validator("delay")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("delay must be a finite number of seconds")
        return value

    def payload_json(self) -> str:
        return json.dumps(self.payload, allow_nan=False)


class Job(BaseModel):
    tenant_id: UUID
    id: UUID
    queue: str
    type: str
    payload: Any
    status: Status
    priority: Priority
    scheduled_at: datetime
    attempts: int
    max_attempts: int
    worker_id: str | None = None
    heartbeat_at: datetime | None = None
    lease_expires_at: datetime | None = None
    cancel_requested: bool = False
    idempotency_key: str | None = None
    concurrency_key: str | None = None
    result: Any = None
    last_error: str | None = None
    errors: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class DeadLetter(BaseModel):
    tenant_id: UUID
    id: UUID
    job_id: UUID
    queue: str
    type: str
    payload: Any
    priority: Priority
    attempts: int
    error: str
    error_stack: str | None = None
    retry_history: list[dict[str, Any]] = Field(default_factory=list)
    moved_at: datetime
    requeued_job_id: UUID | None = None
    requeued_at: datetime | None = None


class ScheduleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    cron: str = Field(min_length=1, max_length=200)
    timezone: str = "UTC"
    type: str = Field(min_length=1, max_length=200)
    payload: Any = Field(default_factory=dict)
    queue: str = Field(default="default", pattern=QUEUE_PATTERN)
    priority: Priority = Priority.normal
    max_attempts: int = Field(default=3, ge=1, le=1000)

    @field_validator("payload")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return JobSpec._json(value)


class Schedule(BaseModel):
    tenant_id: UUID
    id: UUID
    name: str
    cron: str
    timezone: str
    queue: str
    type: str
    payload: Any
    priority: Priority
    max_attempts: int
    enabled: bool
    next_run_at: datetime
    last_run_at: datetime | None = None
    last_job_id: UUID | None = None


class Pause(BaseModel):
    """A paused queue, or one job type in it (`type` None: the whole queue)."""

    queue: str
    type: str | None
    paused_at: datetime
    everyone: bool
    """An operator's pause for every tenant (`agentplane jobs pause`): a tenant's resume
    does not lift it."""


class Limit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, max_length=255)
    max_running: int | None = Field(default=None, ge=0)
    rate_per_second: float | None = Field(default=None, gt=0, le=1_000_000)
    burst: float = Field(default=1, ge=1, le=1_000_000)


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None
