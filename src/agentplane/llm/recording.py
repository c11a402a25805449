"""Recording a call: its llm_calls row priced at the price valid at call time, its usage
record and its reservation's use (journaled, or settled on the same transaction), and a
failed call's row with its reservation released. What a call cost counts in the metrics
once the transaction that recorded it commits (settle)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import asdict
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import pq

from agentplane import metrics
from agentplane.db.pool import Connection, Database
from agentplane.errors import AgentplaneError
from agentplane.llm import store
from agentplane.llm.adapters.base import ChatRequest, ChatResult
from agentplane.llm.context import CallContext, CallOutcome, PendingCall
from agentplane.usage import store as usage_store
from agentplane.usage.budgets import Budgets, Reservation

log = logging.getLogger("agentplane.llm")
MILLION = Decimal(1_000_000)
# Where built-in prices are listed for each provider type.
FAMILIES = {"offline": "offline", "openai_compatible": "openai", "anthropic": "anthropic"}


def cost_of(result: ChatResult, price: dict[str, Any] | None) -> tuple[Decimal | None, str]:
    """Provider-reported cost wins; otherwise the price valid at call time, cache reads
    and cache writes of the prompt at their own rates (the input rate when the price has
    none); no price means unknown (NULL), never zero."""
    if result.cost is not None:
        return result.cost, "provider"
    if price is None:
        return None, "unknown"
    cached = min(result.cached_tokens, result.prompt_tokens)
    written = min(result.cache_write_tokens, result.prompt_tokens - cached)
    rate = price["input_per_mtok"]
    cached_rate = price["cached_input_per_mtok"]
    write_rate = price.get("cache_write_per_mtok")
    cost = (
        (result.prompt_tokens - cached - written) * rate
        + cached * (rate if cached_rate is None else cached_rate)
        + written * (rate if write_rate is None else write_rate)
        + result.completion_tokens * price["output_per_mtok"]
    ) / MILLION
    return cost.quantize(Decimal("1e-10")), "price"


def priced_as(pending: PendingCall) -> list[tuple[str, str, str, datetime]]:
    """The prices a pending call may be charged at, in order (store.prices_at): the
    model asked for, else the model that answered."""
    row, request, result = pending.row, pending.request, pending.result
    family = FAMILIES[row["type"]]
    wanted = [(row["name"], family, request.model, pending.started)]
    if result.model and result.model != request.model:
        wanted.append((row["name"], family, result.model, pending.started))
    return wanted


class Recorder:
    def __init__(self, db: Database, budgets: Budgets) -> None:
        self.db = db
        self.budgets = budgets

    async def settle(self, pending: PendingCall) -> None:
        """After the transaction that recorded the call has committed: from then on it
        counts in the metrics (once: every recorded call is settled once), and its reservation
        is settled."""
        metrics.llm_call(
            pending.row["name"], pending.request.model, pending.status, pending.result,
            pending.cost_usd, pending.latency_ms,
        )
        if pending.reservation is not None and not pending.settled:
            await self.budgets.settle(pending.ctx.tenant_id, pending.reservation)

    @staticmethod
    def call_row(
        ctx: CallContext,
        row: dict[str, Any],
        request: ChatRequest,
        stream: bool,
        reservation: Reservation | None,
        started: datetime,
        t0: float,
    ) -> dict[str, Any]:
        return {
            # Field by field: asdict() deep-copies, which shows at a call per task.
            "user_id": ctx.user_id,
            "api_key_id": ctx.api_key_id,
            "session_id": ctx.session_id,
            "run_id": ctx.run_id,
            "task_id": ctx.task_id,
            "agent_execution_id": ctx.agent_execution_id,
            "agent_id": ctx.agent_id,
            "id": uuid.uuid4(),
            "provider_id": row["id"],
            "provider": row["name"],
            "model": request.model,
            "request": {
                "messages": request.messages if ctx.store_content else None,
                "params": request.params(),
            },
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
            "cache_write_tokens": 0,
            "cost_usd": None,
            "cost_source": "unknown",
            "ttft_ms": None,
            "status": "completed",
            "error": None,
            "reasoning_tokens": 0,
            "tokens_estimated": False,
            "endpoint": ctx.endpoint,
            "request_id": ctx.request_id,
            "stream_chunks": None,
            "chunk_gap_p50_ms": None,
            "chunk_gap_p99_ms": None,
            "project_id": ctx.project_id,
            "tags": list(ctx.tags),
            "cached": False,
        }

    async def record(
        self,
        ctx: CallContext,
        row: dict[str, Any],
        request: ChatRequest,
        reservation: Reservation | None,
        started: datetime,
        t0: float,
        result: ChatResult,
        stream: bool,
        *,
        call_id: UUID | None = None,
        status: str = "completed",
        error: str | None = None,
        chunks: dict[str, Any] | None = None,
    ) -> CallOutcome:
        latency = round((time.perf_counter() - t0) * 1000)
        pending = PendingCall(ctx, row, request, reservation, started, latency, result)
        pending.status, pending.error, pending.chunks = status, error, chunks
        if call_id is not None:
            pending.id = call_id
        # Pipelined: the transaction's start goes out with the price lookup, its writes
        # with the commit (two round trips).
        async with self.db.tenant_pipeline(ctx.tenant_id) as conn:
            outcome = await self.write(conn, pending, stream, settle_now=True)
        await self.settle(pending)
        return outcome

    async def write(
        self, conn: Connection, pending: PendingCall, stream: bool, settle_now: bool = False
    ) -> CallOutcome:
        """`settle_now`: the reservation is settled on this transaction, which is the call's own
        and short (one round trip fewer than settling after it; the budget rows stay
        locked until it commits). Otherwise it is journaled, and settled after the
        caller's transaction commits (settle)."""
        wanted = priced_as(pending)
        prices = [await store.price_at(conn, *wanted[0])]
        if prices[0] is None and len(wanted) > 1:
            prices.append(await store.price_at(conn, *wanted[1]))
        call, outcome = self.entry(pending, stream, prices)
        result, reservation, row = pending.result, pending.reservation, pending.row
        used = result.prompt_tokens + result.completion_tokens
        # A caller's pipelined connection sends these with its next round trip.
        already = conn.pgconn.pipeline_status != pq.PipelineStatus.OFF
        async with contextlib.nullcontext() if already else conn.pipeline():
            await store.insert_call(conn, call)
            await usage_store.insert_record(conn, usage_row(pending.ctx, call))
            if reservation is not None and settle_now:
                await Budgets.settle_used_in(conn, [(reservation, used)])
                pending.settled = True
            elif reservation is not None:
                await Budgets.journal(conn, reservation, used)
            if row["tenant_id"] is not None:
                ok = pending.status != "failed"
                await store.record_health(
                    conn, row["id"], ok, call["latency_ms"], None if ok else pending.error
                )
        return outcome

    def entry(
        self,
        pending: PendingCall,
        stream: bool,
        prices: list[dict[str, Any] | None],
    ) -> tuple[dict[str, Any], CallOutcome]:
        """The call's row, priced by the first of `prices` found (see _priced_as)."""
        result = pending.result
        call = self.call_row(
            pending.ctx,
            pending.row,
            pending.request,
            stream,
            pending.reservation,
            pending.started,
            0.0,
        )
        keep = pending.ctx.store_content
        call.update(
            id=pending.id,
            latency_ms=pending.latency_ms,
            response_content=result.content if keep else None,
            tool_calls=([asdict(c) for c in result.tool_calls] or None) if keep else None,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_tokens=result.cached_tokens,
            cache_write_tokens=result.cache_write_tokens,
            ttft_ms=result.ttft_ms,
            reasoning_tokens=result.reasoning_tokens,
            tokens_estimated=result.estimated,
            status=pending.status,
            error=pending.error,
            **(pending.chunks or {}),
        )
        price = next((p for p in prices if p is not None), None)
        call["cost_usd"], call["cost_source"] = cost_of(result, price)
        pending.cost_usd = call["cost_usd"]
        if call["cost_source"] == "unknown":
            log.warning(
                "no price for %s/%s: cost recorded as unknown",
                pending.row["name"],
                pending.request.model,
            )
        outcome = CallOutcome(
            call_id=call["id"],
            provider=pending.row["name"],
            result=result,
            cost_usd=call["cost_usd"],
            cost_source=call["cost_source"],
            latency_ms=call["latency_ms"],
            reserved_tokens=call["reserved_tokens"],
        )
        return call, outcome

    async def record_failure(
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
        call_id: UUID | None = None,
    ) -> None:
        call = self.call_row(ctx, row, request, stream, reservation, started, t0)
        if call_id is not None:
            call["id"] = call_id
        cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
        call.update(status="cancelled" if cancelled else "failed", error=error_text(exc, redact))
        metrics.llm_call(row["name"], request.model, "failed", latency_ms=call["latency_ms"])
        # Shielded: the reservation must be given back even when the caller is being cancelled.
        await asyncio.shield(self.write_failure(ctx, row, reservation, call))

    async def write_failure(
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
        except AgentplaneError as exc:  # the call's own error matters more; the reservation expires
            log.error("could not record a failed LLM call: %s", exc.detail)


def error_text(exc: BaseException, redact: Any) -> str:
    if isinstance(exc, AgentplaneError):
        error = exc.detail
    elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        error = "cancelled by the caller"
    else:
        error = f"{type(exc).__name__}: {exc}"
    return redact(error)[:1000]


def usage_row(ctx: CallContext, call: dict[str, Any]) -> dict[str, Any]:
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
        "latency_ms": call["latency_ms"],
    }
