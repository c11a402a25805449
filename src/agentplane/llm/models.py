"""Pydantic types of providers, models and prices, and LLM calls."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from agentplane.money import Money

ProviderType = Literal["offline", "openai_compatible", "anthropic"]
HealthStatus = Literal["healthy", "degraded", "unhealthy", "unknown"]
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def check_base_url(value: str | None) -> str | None:
    import httpx

    if value is None:
        return None
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError):
        raise ValueError("base_url is not a URL") from None
    if url.scheme not in ("http", "https") or not url.host or url.query or url.fragment:
        raise ValueError("base_url must be an http(s) URL with a host, no query or fragment")
    return str(url).rstrip("/")


class ProviderCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME)
    type: ProviderType
    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = Field(default=None, min_length=1, max_length=255)
    weight: Decimal = Field(default=Decimal("1.0"), ge=0, le=999)
    enabled: bool = True
    config: dict[str, Any] = Field(default_factory=dict)
    """timeout (s), max_retries, backoff (s), fallback (a provider name), headers."""

    _url = field_validator("base_url")(classmethod(lambda cls, v: check_base_url(v)))


class ProviderUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str | None = None
    api_key: SecretStr | None = None
    model: str | None = Field(default=None, min_length=1, max_length=255)
    weight: Decimal | None = Field(default=None, ge=0, le=999)
    enabled: bool | None = None
    config: dict[str, Any] | None = None

    _url = field_validator("base_url")(classmethod(lambda cls, v: check_base_url(v)))


class Provider(BaseModel):
    """A provider as the API shows it: the key is write-only, only its presence shows."""

    id: UUID
    tenant_id: UUID | None
    builtin: bool
    name: str
    type: ProviderType
    base_url: str | None
    has_api_key: bool
    model: str | None
    weight: Decimal
    enabled: bool
    config: dict[str, Any]
    health_status: HealthStatus
    response_time: int
    consecutive_failures: int
    last_error: str | None
    last_checked_at: datetime | None
    created_at: datetime
    updated_at: datetime


class ModelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=63)
    name: str = Field(min_length=1, max_length=255)
    context_window: int | None = Field(default=None, gt=0)
    price: PriceSet | None = None


class ModelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    context_window: int | None = Field(gt=0)
    """Tokens the model takes in; null when unknown."""


class PriceSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_per_mtok: Decimal = Field(ge=0, max_digits=14, decimal_places=6)
    output_per_mtok: Decimal = Field(ge=0, max_digits=14, decimal_places=6)
    cached_input_per_mtok: Decimal | None = Field(
        default=None, ge=0, max_digits=14, decimal_places=6
    )
    """Cache reads; none: the input price."""
    cache_write_per_mtok: Decimal | None = Field(
        default=None, ge=0, max_digits=14, decimal_places=6
    )
    """Prompt tokens written to the cache (Anthropic); none: the input price."""
    valid_from: datetime | None = None
    """Defaults to now; a price never starts before the current one (past costs stay)."""


class Price(BaseModel):
    id: UUID
    input_per_mtok: Money
    output_per_mtok: Money
    cached_input_per_mtok: Money | None
    cache_write_per_mtok: Money | None = None
    valid_from: datetime
    valid_to: datetime | None


class Model(BaseModel):
    id: UUID
    tenant_id: UUID | None
    builtin: bool
    provider: str
    name: str
    context_window: int | None
    prices: list[Price] = Field(default_factory=list)


class LLMCall(BaseModel):
    id: UUID
    tenant_id: UUID
    user_id: UUID | None
    api_key_id: UUID | None
    session_id: UUID | None
    run_id: UUID | None
    task_id: UUID | None
    agent_execution_id: UUID | None
    agent_id: UUID | None
    provider_id: UUID | None
    provider: str
    model: str
    request: dict[str, Any]
    response_content: str | None
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cache_write_tokens: int = 0
    total_tokens: int
    cost_usd: Money | None
    cost_source: str
    reserved_tokens: int
    stream: bool
    latency_ms: int | None
    ttft_ms: int | None
    status: str
    error: str | None
    created_at: datetime
    completed_at: datetime | None
    reasoning_tokens: int = 0
    tokens_estimated: bool = False
    """The tokens were counted by agentplane: the provider reported none (or the stream
    ended before it could)."""
    endpoint: str | None = None
    """The gateway route that made the call (chat.completions, embeddings, messages,
    responses); null for the runtime's own calls."""
    request_id: str | None = None
    stream_chunks: int | None = None
    """Of a streamed call: how many chunks it had, and the gaps between them (ttft_ms is
    its time to first token)."""
    chunk_gap_p50_ms: float | None = None
    chunk_gap_p99_ms: float | None = None
    project_id: UUID | None = None
    tags: list[str] = []
    cached: bool = False
    """Answered from the tenant's response cache: no provider was called, nothing spent."""


class TestResult(BaseModel):
    """A provider's test: one short call and what it took."""

    provider: str
    model: str
    latency_ms: int
    prompt_tokens: int
    completion_tokens: int
    content: str
    call_id: UUID
    cost_usd: Money | None = None
    """None: the model has no price."""


ModelCreate.model_rebuild()
