"""Pydantic types of sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class SessionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    external_id: str | None = Field(default=None, min_length=1, max_length=255)
    context: dict[str, Any] = Field(default_factory=dict)
    token_budget: int = Field(default=10000, ge=0)
    memory_id: UUID | None = None
    expires_at: datetime | None = None


class SessionUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context: dict[str, Any] | None = None
    token_budget: int | None = Field(default=None, ge=0)
    memory_id: UUID | None = None
    expires_at: datetime | None = None


class Session(BaseModel):
    id: UUID
    tenant_id: UUID
    user_id: UUID | None
    external_id: str | None
    context: dict[str, Any]
    token_budget: int
    tokens_used: int
    tokens_reserved: int
    request_count: int
    memory_id: UUID | None
    last_activity: datetime
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    deleted_by: UUID | None


class SessionPage(BaseModel):
    items: list[Session]
    next_cursor: str | None = None
