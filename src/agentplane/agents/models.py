"""Pydantic types of agents and agent instances."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from agentplane.money import Money

SLUG = r"^[a-z0-9][a-z0-9_-]{0,49}$"
AgentStatus = Literal["active", "inactive", "maintenance"]
InstanceStatus = Literal["starting", "idle", "busy", "stopping", "stopped", "failed", "offline"]


class AgentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=SLUG, description="a slug, e.g. akira-001")
    name: str = Field(min_length=1, max_length=200)
    role: str = Field(min_length=1, max_length=200)
    model: str = Field(
        default="offline/offline-1",
        min_length=1,
        max_length=200,
        description="provider/model; a bare model name uses the tenant's default provider",
    )
    specialties: list[str] = Field(default_factory=list, max_length=50)
    instructions: str = Field(default="", max_length=100_000)
    personality_emoji: str | None = Field(default=None, max_length=10)
    tools: list[str] = Field(default_factory=list, max_length=50)
    status: AgentStatus = "active"
    project_id: UUID | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    metadata: dict[str, Any] = Field(default_factory=dict)


class AgentPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    role: str | None = Field(default=None, min_length=1, max_length=200)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    specialties: list[str] | None = Field(default=None, max_length=50)
    instructions: str | None = Field(default=None, max_length=100_000)
    personality_emoji: str | None = Field(default=None, max_length=10)
    tools: list[str] | None = Field(default=None, max_length=50)
    status: AgentStatus | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=200_000)
    metadata: dict[str, Any] | None = None


class Agent(BaseModel):
    uid: UUID
    id: str
    name: str
    role: str
    model: str
    specialties: list[str]
    instructions: str
    personality_emoji: str | None
    tools: list[str]
    status: AgentStatus
    version: int
    project_id: UUID | None
    total_tasks_completed: int
    total_tasks_failed: int
    total_tokens_used: int
    total_cost_usd: Money
    average_latency_ms: float
    success_rate: float
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime

    @property
    def max_tokens(self) -> int | None:
        return self.metadata.get("max_tokens")


class InstanceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    instance_key: str = Field(min_length=1, max_length=255)
    capabilities: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] = Field(default_factory=dict)


class InstanceStatusIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: InstanceStatus
    reason: str | None = Field(default=None, max_length=1000)


class StatusChange(BaseModel):
    status: str
    reason: str | None
    created_at: datetime


class Instance(BaseModel):
    id: UUID
    agent_id: UUID
    instance_key: str
    status: InstanceStatus
    capabilities: list[str]
    metadata: dict[str, Any]
    heartbeat_at: datetime | None
    started_at: datetime
    stopped_at: datetime | None
    history: list[StatusChange] = Field(default_factory=list)
