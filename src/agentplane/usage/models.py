"""Pydantic types of the usage ledger and budgets."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agentplane.money import Money


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
    cost_usd: Money | None
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
    token_limit: int | None
    """None: no monthly limit."""
    monthly_token_usage: int
    tokens_reserved: int


class UsageRow(BaseModel):
    """One period (and key of the grouping) of a usage report, from the daily rollup."""

    period_start: date
    key: str | None
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    total_tokens: int
    cost_usd: Money | None
    """The cost of the priced calls; null when calls were made and none was priced."""
    unpriced_calls: int
    """Calls whose model had no price: their cost is unknown and not in cost_usd."""
    cost_complete: bool = True
    """False when unpriced calls make cost_usd a lower bound (or unknown)."""
    cache_hit_rate: float | None
    """Cached prompt tokens over prompt tokens."""
    avg_llm_latency_ms: float | None
    tasks_completed: int
    tasks_failed: int
    success_rate: float | None
    """Completed tasks over finished (completed or failed) tasks."""
    error_rate: float | None
    """Failed tasks over finished tasks."""
    avg_task_duration_ms: float | None
    tool_calls: int
    tool_failures: int
    runs_completed: int
    runs_failed: int
    runs_cancelled: int
    label: str | None = None
    """What the key names when the key is an id: the agent's slug, the user's email, the
    API key's or project's name. Last, so that the CSV's columns keep their places."""


class UsageReport(BaseModel):
    period: Literal["day", "week", "month"]
    by: str | None
    since: date
    until: date
    rows: list[UsageRow]


class AlertFiring(BaseModel):
    alert_id: UUID
    period_start: date
    value: Money
    threshold: Money
    run_id: UUID | None
    fired_at: datetime


class UsageSummary(BaseModel):
    """The current billing period (the UTC month) against the tenant's limit."""

    period_start: date
    period_end: date
    token_limit: int | None
    """None: no monthly limit."""
    tokens_used: int
    """Tokens of the period's usage records."""
    tokens_reserved: int
    """Held by calls in flight."""
    percent_used: float
    cost_usd: Money | None
    """The cost of the priced calls; null when calls were made and none was priced."""
    unpriced_calls: int = 0
    cost_complete: bool = True
    calls: int
    runs_completed: int
    runs_failed: int
    runs_cancelled: int
    tasks_completed: int
    tasks_failed: int
    alerts_fired: list[AlertFiring]


class BillingPeriod(BaseModel):
    period_start: date
    period_end: date
    status: str
    runs_completed: int
    runs_failed: int
    runs_cancelled: int
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: Money
    token_limit: int | None
    closed_at: datetime | None


class AlertIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    scope: Literal["tenant", "user", "api_key"] = "tenant"
    subject_id: UUID | None = None
    """The user or API key (scope user / api_key); none for the tenant."""
    metric: Literal["tokens", "cost_usd"] = "tokens"
    period: Literal["day", "month"] = "month"
    threshold: Decimal = Field(gt=0, max_digits=24, decimal_places=6)
    unit: Literal["absolute", "percent"] = "absolute"
    """percent: of the budget (the tenant's monthly token limit, the API key's budget)."""
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> AlertIn:
        if (self.scope == "tenant") != (self.subject_id is None):
            raise ValueError("subject_id is required for scope user or api_key, and only then")
        if self.unit == "percent":
            if self.metric != "tokens" or self.scope == "user":
                raise ValueError("percent alerts are on tokens, of a tenant's or a key's budget")
            if self.threshold > 1000:
                raise ValueError("a percent threshold is at most 1000")
        return self


class AlertPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    threshold: Decimal | None = Field(default=None, gt=0, max_digits=24, decimal_places=6)
    enabled: bool | None = None


class Alert(BaseModel):
    id: UUID
    name: str
    scope: str
    subject_id: UUID | None
    metric: str
    period: str
    threshold: Money
    unit: str
    enabled: bool
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime


class Overview(BaseModel):
    """A period at a glance: totals, a row per day, the top agents, models and tools,
    task duration percentiles, and the billing period's budget and alerts."""

    since: date
    until: date
    totals: UsageRow
    """The whole period as one row (period_start is `since`)."""
    days: list[UsageRow]
    """One row per day of the period, days without usage included (zeros)."""
    task_duration_p50_ms: float | None
    task_duration_p95_ms: float | None
    tasks_timed: int
    """The finished tasks the percentiles are over."""
    top_agents: list[UsageRow]
    top_models: list[UsageRow]
    top_tools: list[UsageRow]
    """By tool calls (tools cost nothing themselves)."""
    budget: UsageSummary
