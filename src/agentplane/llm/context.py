"""What a call carries: who makes it (CallContext), where it goes (Resolved), what it
returned before and after it is recorded (PendingCall, CallOutcome), and how long it
waited on its provider (Timing)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from agentplane.llm.adapters.base import ChatRequest, ChatResult
from agentplane.usage.budgets import Reservation


@dataclass
class CallContext:
    """Who is calling and for what; all but the tenant are optional."""

    tenant_id: UUID
    user_id: UUID | None = None
    api_key_id: UUID | None = None
    session_id: UUID | None = None
    run_id: UUID | None = None
    task_id: UUID | None = None
    agent_execution_id: UUID | None = None
    agent_id: UUID | None = None
    endpoint: str | None = None
    """The gateway route that made the call (chat.completions, messages, ...); None for
    the runtime's own calls."""
    request_id: str | None = None
    """The HTTP request the call answered (its X-Request-ID)."""
    store_content: bool = True
    """False: the call's messages and answer are not recorded (the tenant's privacy
    setting); its parameters, tokens and cost always are."""
    project_id: UUID | None = None
    tags: tuple[str, ...] = ()
    """What the caller files the call under (the gateway's x-agentplane-project and
    x-agentplane-tags), to find it by (GET /v1/llm-calls?project=&tag=)."""


@dataclass
class Timing:
    """Filled in by a call: how long it waited on the provider, so that a caller can tell
    its own overhead apart (the gateway's x-agentplane-overhead-ms)."""

    upstream_s: float = 0.0
    upstream_first_s: float | None = None
    """Of a stream: the wait for its first item."""


@dataclass
class Resolved:
    """A provider resolved once for the calls of one agent turn (LLM.resolve_in)."""

    row: dict[str, Any]
    config: Any
    then: Resolved | None = None
    """Where a call goes if this provider fails it: the fallback of an unhealthy provider
    on trial after its cool-down (or the gateway's next deployment of an alias)."""
    model: str | None = None
    """The model to call on this provider, whatever the request names (the gateway's
    routes name one per deployment)."""
    fallback_only: bool = False
    """`then` is this (healthy) provider's configured fallback, taken only on the errors
    agentplane.llm.fallbacks.falls_over names (others skip it); otherwise `then` is taken
    on any error."""


@dataclass
class PendingCall:
    """A call that returned but is not recorded yet: the caller records it on its own
    transaction (LLM.record_in) and settles its reservation once that commits (LLM.settle). If
    the caller dies first, the reservation expires and the sweeper releases it."""

    ctx: CallContext
    row: dict[str, Any]
    request: ChatRequest
    reservation: Reservation | None
    started: datetime
    latency_ms: int
    result: ChatResult
    id: UUID = field(default_factory=uuid.uuid4)
    """Fixed, so that recording the call twice fails instead of counting it twice."""
    settled: bool = False
    """Its reservation was settled by the transaction that recorded it."""
    cost_usd: Decimal | None = None
    """What recording it priced it at (for the metrics, counted once it commits)."""
    chunks: dict[str, Any] | None = None
    """Of a streamed call: stream_chunks, chunk_gap_p50_ms, chunk_gap_p99_ms."""
    status: str = "completed"
    """Or `cancelled` (the caller closed a stream) or `failed` (the provider broke off a
    stream): such a call is charged for what it generated, its tokens counted here."""
    error: str | None = None


@dataclass
class CallOutcome:
    call_id: UUID
    provider: str
    result: ChatResult
    cost_usd: Decimal | None
    cost_source: str
    latency_ms: int
    reserved_tokens: int
