"""Pydantic types of the usage ledger and budgets."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field


class UsageRecord(BaseModel):
    id: UUID
    tenant_id: UUID
    created_at: datetime
    llm_call_id: UUID
    user_id: UUID | None
    api_key_id: UUID | None
    session_id: UUID | None
    run_id: UUID | None
    task_id: UUID | None
    agent_id: UUID | None
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: Decimal | None
    cost_source: str


class ApiKeyBudgetSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    token_budget: int = Field(ge=0)


class ApiKeyBudget(BaseModel):
    api_key_id: UUID
    token_budget: int
    tokens_used: int
    tokens_reserved: int


class TenantBudget(BaseModel):
    token_limit: int
    monthly_token_usage: int
    tokens_reserved: int
