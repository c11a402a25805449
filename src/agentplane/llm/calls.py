"""The call path every agent turn takes: resolve the provider, reserve the budget,
call the model, then in one durable transaction record the LLM call, its usage
record and the tokens used on the hold (the journal), and finally settle the hold
to that use. A failed call is recorded and its hold released. Everything is
tenant-scoped."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.errors import AgentplaneError, ValidationFailed
from agentplane.llm import service, store
from agentplane.llm.adapters import adapter_for
from agentplane.llm.adapters.base import ChatRequest, ChatResult, TextDelta
from agentplane.llm.tokens import estimate_prompt
from agentplane.usage import store as usage_store
from agentplane.usage.service import Budgets, Reservation

log = logging.getLogger("agentplane.llm")
MILLION = Decimal(1_000_000)
# Where built-in prices are listed for each provider type.
FAMILIES = {"offline": "offline", "openai_compatible": "openai", "anthropic": "anthropic"}


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


@dataclass
class CallOutcome:
    call_id: UUID
    provider: str
    result: ChatResult
    cost_usd: Decimal | None
    cost_source: str
    latency_ms: int
    reserved_tokens: int


def cost_of(result: ChatResult, price: dict[str, Any] | None) -> tuple[Decimal | None, str]:
    """Provider-reported cost wins; otherwise the price valid at call time, cached input
    at its own rate; no price means unknown (NULL), never zero."""
    if result.cost is not None:
        return result.cost, "provider"
    if price is None:
        return None, "unknown"
    cached = min(result.cached_tokens, result.prompt_tokens)
    cached_rate = price["cached_input_per_mtok"]
    if cached_rate is None:
        cached_rate = price["input_per_mtok"]
    cost = (
        (result.prompt_tokens - cached) * price["input_per_mtok"]
        + cached * cached_rate
        + result.completion_tokens * price["output_per_mtok"]
    ) / MILLION
    return cost.quantize(Decimal("1e-10")), "price"


class LLM:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.budgets = Budgets(db, settings)

    async def _prepare(
        self, ctx: CallContext, request: ChatRequest, provider: str | None, enforce: bool
    ) -> tuple[dict[str, Any], Any, ChatRequest, Reservation | None]:
        async with self.db.tenant_connection(ctx.tenant_id) as conn:
            row, config = await service.resolve(conn, self.settings, provider)
        request = replace(
            request,
            model=request.model or row["model"],
            max_tokens=request.max_tokens or self.settings.llm_default_max_tokens,
        )
        if not request.model:
            raise ValidationFailed(f"no model given and provider {row['name']} has no default")
        reservation = None
        if enforce:
            worst = estimate_prompt(request.messages, request.tools) + request.max_tokens
            reservation = await self.budgets.reserve(
                ctx.tenant_id, worst, session_id=ctx.session_id, api_key_id=ctx.api_key_id
            )
        return row, adapter_for(config), request, reservation

    async def complete(
        self,
        ctx: CallContext,
        request: ChatRequest,
        *,
        provider: str | None = None,
        enforce_budgets: bool = True,
    ) -> CallOutcome:
        """One model call. `enforce_budgets=False` is for measuring what budgets cost."""
        row, adapter, request, reservation = await self._prepare(
            ctx, request, provider, enforce_budgets
        )
        started, t0 = datetime.now(UTC), time.perf_counter()
        try:
            result = await adapter.complete(request)
        except BaseException as exc:
            await self._record_failure(
                ctx, row, request, reservation, started, t0, exc, False, adapter.redact
            )
            raise
        return await self._record(ctx, row, request, reservation, started, t0, result, False)

    async def stream(
        self, ctx: CallContext, request: ChatRequest, *, provider: str | None = None
    ) -> AsyncIterator[TextDelta | CallOutcome]:
        """Text deltas as the model produces them, then the recorded CallOutcome."""
        row, adapter, request, reservation = await self._prepare(ctx, request, provider, True)
        started, t0 = datetime.now(UTC), time.perf_counter()
        result: ChatResult | None = None
        try:
            async for item in adapter.stream(request):
                if isinstance(item, ChatResult):
                    result = item
                else:
                    yield item
            assert result is not None, "an adapter stream ends with its result"
        except BaseException as exc:  # includes the consumer closing the stream early
            await self._record_failure(
                ctx, row, request, reservation, started, t0, exc, True, adapter.redact
            )
            raise
        yield await self._record(ctx, row, request, reservation, started, t0, result, True)

    def _call_row(
        self,
        ctx: CallContext,
        row: dict[str, Any],
        request: ChatRequest,
        stream: bool,
        reservation: Reservation | None,
        started: datetime,
        t0: float,
    ) -> dict[str, Any]:
        ids = asdict(ctx)
        ids.pop("tenant_id")
        return {
            **ids,
            "id": uuid.uuid4(),
            "provider_id": row["id"],
            "provider": row["name"],
            "model": request.model,
            "request": {"messages": request.messages, "params": request.params()},
            "reserved_tokens": reservation.tokens if reservation else 0,
            "stream": stream,
            "latency_ms": round((time.perf_counter() - t0) * 1000),
            "created_at": started,
            "response_content": None,
            "tool_calls": None,
            "finish_reason": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "cost_usd": None,
            "cost_source": "unknown",
            "ttft_ms": None,
            "status": "completed",
            "error": None,
        }

    async def _record(
        self,
        ctx: CallContext,
        row: dict[str, Any],
        request: ChatRequest,
        reservation: Reservation | None,
        started: datetime,
        t0: float,
        result: ChatResult,
        stream: bool,
    ) -> CallOutcome:
        call = self._call_row(ctx, row, request, stream, reservation, started, t0)
        call.update(
            response_content=result.content,
            tool_calls=[asdict(c) for c in result.tool_calls] or None,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_tokens=result.cached_tokens,
            ttft_ms=result.ttft_ms,
        )
        used = result.prompt_tokens + result.completion_tokens
        async with self.db.tenant_connection(ctx.tenant_id) as conn:
            family = FAMILIES[row["type"]]
            price = await store.price_at(conn, row["name"], family, request.model, started)
            if price is None and result.model and result.model != request.model:
                price = await store.price_at(conn, row["name"], family, result.model, started)
            call["cost_usd"], call["cost_source"] = cost_of(result, price)
            if call["cost_source"] == "unknown":
                log.warning(
                    "no price for %s/%s: cost recorded as unknown", row["name"], request.model
                )
            async with conn.pipeline():
                await store.insert_call(conn, call)
                await usage_store.insert_record(conn, _usage(ctx, call))
                if reservation is not None:
                    await Budgets.journal(conn, reservation, used)
                if row["tenant_id"] is not None:
                    await store.record_health(conn, row["id"], True, call["latency_ms"], None)
        if reservation is not None:
            await self.budgets.settle(ctx.tenant_id, reservation)
        return CallOutcome(
            call_id=call["id"],
            provider=row["name"],
            result=result,
            cost_usd=call["cost_usd"],
            cost_source=call["cost_source"],
            latency_ms=call["latency_ms"],
            reserved_tokens=call["reserved_tokens"],
        )

    async def _record_failure(
        self,
        ctx: CallContext,
        row: dict[str, Any],
        request: ChatRequest,
        reservation: Reservation | None,
        started: datetime,
        t0: float,
        exc: BaseException,
        stream: bool,
        redact: Any,
    ) -> None:
        call = self._call_row(ctx, row, request, stream, reservation, started, t0)
        if isinstance(exc, AgentplaneError):
            error = exc.detail
        elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            error = "cancelled by the caller"
        else:
            error = f"{type(exc).__name__}: {exc}"
        call.update(status="failed", error=redact(error)[:1000])
        # Shielded: the hold must be given back even when the caller is being cancelled.
        await asyncio.shield(self._write_failure(ctx, row, reservation, call))

    async def _write_failure(
        self,
        ctx: CallContext,
        row: dict[str, Any],
        reservation: Reservation | None,
        call: dict[str, Any],
    ) -> None:
        try:
            async with self.db.tenant_connection(ctx.tenant_id) as conn, conn.pipeline():
                await store.insert_call(conn, call)
                if reservation is not None:
                    await Budgets.settle_in(conn, ctx.tenant_id, reservation)
                if row["tenant_id"] is not None and call["error"] != "cancelled by the caller":
                    await store.record_health(
                        conn, row["id"], False, call["latency_ms"], call["error"]
                    )
        except AgentplaneError as exc:  # the call's own error matters more; the hold expires
            log.error("could not record a failed LLM call: %s", exc.detail)


def _usage(ctx: CallContext, call: dict[str, Any]) -> dict[str, Any]:
    return {
        "llm_call_id": call["id"],
        "user_id": ctx.user_id,
        "api_key_id": ctx.api_key_id,
        "session_id": ctx.session_id,
        "run_id": ctx.run_id,
        "task_id": ctx.task_id,
        "agent_id": ctx.agent_id,
        "provider": call["provider"],
        "model": call["model"],
        "prompt_tokens": call["prompt_tokens"],
        "completion_tokens": call["completion_tokens"],
        "cached_tokens": call["cached_tokens"],
        "cost_usd": call["cost_usd"],
        "cost_source": call["cost_source"],
    }
