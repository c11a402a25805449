"""The call path every agent turn takes: resolve the provider, reserve the budget,
call the model, then in one durable transaction record the LLM call, its usage
record and the tokens used on the hold (the journal), and finally settle the hold
to that use. A failed call is recorded and its hold released. Everything is
tenant-scoped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import pq

from agentplane import clock, metrics
from agentplane.auth.models import Principal
from agentplane.config import Settings
from agentplane.db.pool import Connection, Database
from agentplane.errors import AgentplaneError, BudgetExceeded, ValidationFailed
from agentplane.llm import service, store
from agentplane.llm.adapters import adapter_for
from agentplane.llm.adapters.base import ChatRequest, ChatResult, TextDelta, storable
from agentplane.llm.models import TestResult
from agentplane.llm.sweep import Sweeper, sweeper_for
from agentplane.llm.tokens import estimate_prompt
from agentplane.usage import store as usage_store
from agentplane.usage.budgets import Budgets, Reservation

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
class Resolved:
    """A provider resolved once for the calls of one agent turn (LLM.resolve_in)."""

    row: dict[str, Any]
    config: Any
    then: Resolved | None = None
    """Where a call goes if this provider fails it: the fallback of an unhealthy provider
    on trial after its cool-down."""


@dataclass
class PendingCall:
    """A call that returned but is not recorded yet: the caller records it on its own
    transaction (LLM.record_in) and settles its hold once that commits (LLM.settle). If
    the caller dies first, the hold expires and the sweeper releases it."""

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
    """Its hold was settled by the transaction that recorded it."""
    cost_usd: Decimal | None = None
    """What recording it priced it at (for the metrics, counted once it commits)."""


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


class LLM:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.budgets = Budgets(db, settings)

    async def resolve_in(
        self, conn: Connection, provider: str | None, row: Any = service.FETCH
    ) -> Resolved:
        """Resolve the provider on the caller's tenant transaction, for call(resolved=);
        `row` is the provider's row when the caller read it already."""
        then = None
        for row_, config in reversed(await service.resolve(conn, self.settings, provider, row)):
            then = Resolved(row_, config, then)
        assert then is not None
        return then

    def _defaults(self, request: ChatRequest, row: dict[str, Any]) -> ChatRequest:
        request = replace(
            request,
            model=request.model or row["model"],
            max_tokens=request.max_tokens or self.settings.llm_default_max_tokens,
        )
        if not request.model:
            raise ValidationFailed(f"no model given and provider {row['name']} has no default")
        return request

    @staticmethod
    def _worst(request: ChatRequest) -> int:
        """What a call may use at most: its prompt and max_tokens."""
        return estimate_prompt(request.messages, request.tools) + request.max_tokens

    async def _prepare(
        self,
        ctx: CallContext,
        request: ChatRequest,
        provider: str | None,
        enforce: bool,
        resolved: Resolved | None = None,
        hold: Awaitable[Reservation] | None = None,
    ) -> tuple[dict[str, Any], Any, ChatRequest, Reservation | None]:
        if resolved is None:
            async with self.db.tenant_connection(ctx.tenant_id) as conn:
                resolved = await self.resolve_in(conn, provider)
        row, config = resolved.row, resolved.config
        request = self._defaults(request, row)
        if hold is not None:
            reservation: Reservation | None = await hold
        else:
            reservation = await self._reserve(ctx, self._worst(request)) if enforce else None
        return row, adapter_for(config), request, reservation

    def hold_for(
        self, ctx: CallContext, request: ChatRequest, resolved: Resolved
    ) -> asyncio.Future[Reservation]:
        """The hold call(request, resolved=...) would take, taken now in the background:
        a caller that knows its next call early overlaps the hold's round trip with its
        own work, then passes it to call(hold=...) or releases it (release)."""
        tokens = self._worst(self._defaults(request, resolved.row))
        return asyncio.ensure_future(self._reserve(ctx, tokens))

    async def release(self, ctx: CallContext, hold: asyncio.Future[Reservation]) -> None:
        """Give back a hold from hold_for that no call used."""
        with contextlib.suppress(Exception):
            await self.budgets.settle(ctx.tenant_id, await hold)

    def _sweeper(self) -> Sweeper:
        return sweeper_for(self.db, self.budgets, self.settings.budget_reservation_ttl_s)

    async def _reserve(self, ctx: CallContext, tokens: int) -> Reservation:
        sweeper = self._sweeper()
        sweeper.when_due()
        try:
            try:
                return await self.budgets.reserve(
                    ctx.tenant_id, tokens, session_id=ctx.session_id, api_key_id=ctx.api_key_id
                )
            except BudgetExceeded:
                # Holds left by callers that died may be what refuses this call.
                if not await sweeper.now():
                    raise
            return await self.budgets.reserve(
                ctx.tenant_id, tokens, session_id=ctx.session_id, api_key_id=ctx.api_key_id
            )
        except BudgetExceeded as exc:  # counted once, whichever attempt refused
            metrics.budget_refused(exc)
            raise

    async def complete(
        self,
        ctx: CallContext,
        request: ChatRequest,
        *,
        provider: str | None = None,
        enforce_budgets: bool = True,
        attempts: int | None = None,
    ) -> CallOutcome:
        """One model call. `enforce_budgets=False` is for measuring what budgets cost;
        `attempts` overrides the providers' retries (a test of a provider makes one)."""
        async with self.db.tenant_pipeline(ctx.tenant_id) as conn:
            resolved = await self.resolve_in(conn, provider)
        if attempts is not None:
            step: Resolved | None = resolved
            while step is not None:
                step.config = replace(step.config, max_retries=attempts - 1)
                step = step.then
        return await self._complete(ctx, request, resolved, enforce_budgets)

    async def _complete(
        self,
        ctx: CallContext,
        request: ChatRequest,
        resolved: Resolved,
        enforce: bool,
    ) -> CallOutcome:
        row, adapter, sent, reservation = await self._prepare(ctx, request, None, enforce, resolved)
        started, t0 = clock.now(), time.perf_counter()
        try:
            result = storable(await adapter.complete(sent))
        except BaseException as exc:
            await self._record_failure(
                ctx, row, sent, reservation, started, t0, exc, False, adapter.redact
            )
            if resolved.then is None or not isinstance(exc, Exception):
                raise
            return await self._complete(ctx, request, resolved.then, enforce)
        return await self._record(ctx, row, sent, reservation, started, t0, result, False)

    async def call(
        self,
        ctx: CallContext,
        request: ChatRequest,
        *,
        resolved: Resolved,
        hold: Awaitable[Reservation] | None = None,
    ) -> PendingCall:
        """One model call whose recording the caller folds into its own transaction
        (record_in, then settle after the commit): no transaction of its own when it
        succeeds. A failed call is recorded at once, as by complete(). `hold`: the call's
        hold from hold_for, if the caller took it early."""
        row, adapter, sent, reservation = await self._prepare(
            ctx, request, None, True, resolved, hold
        )
        started, t0 = clock.now(), time.perf_counter()
        try:
            result = storable(await adapter.complete(sent))
        except BaseException as exc:
            await self._record_failure(
                ctx, row, sent, reservation, started, t0, exc, False, adapter.redact
            )
            if resolved.then is None or not isinstance(exc, Exception):
                raise
            return await self.call(ctx, request, resolved=resolved.then)
        latency = round((time.perf_counter() - t0) * 1000)
        return PendingCall(ctx, row, sent, reservation, started, latency, result)

    async def record_in(self, conn: Connection, pending: PendingCall) -> CallOutcome:
        """Write a pending call, its usage record and its journal entry on the caller's
        transaction. On a pipelined connection this costs the price lookup's round trip;
        the writes go out with the caller's next one."""
        return await self._write(conn, pending, False)

    async def record(self, pending: PendingCall) -> CallOutcome:
        """Record a pending call in a transaction of its own, then settle its hold."""
        async with self.db.tenant_connection(pending.ctx.tenant_id) as conn:
            outcome = await self.record_in(conn, pending)
        await self.settle(pending)
        return outcome

    async def settle(self, pending: PendingCall) -> None:
        """After the transaction that recorded the call has committed: from then on it
        counts in the metrics (once: every recorded call is settled once), and its hold
        is settled."""
        metrics.llm_call(
            pending.row["name"], pending.request.model, "completed", pending.result,
            pending.cost_usd, pending.latency_ms,
        )
        if pending.reservation is not None and not pending.settled:
            await self.budgets.settle(pending.ctx.tenant_id, pending.reservation)

    async def stream(
        self, ctx: CallContext, request: ChatRequest, *, provider: str | None = None
    ) -> AsyncIterator[TextDelta | CallOutcome]:
        """Text deltas as the model produces them, then the recorded CallOutcome. A
        provider that fails before its first delta gives way to its fallback, as in
        complete(); after one, the caller has text already and gets the error."""
        async with self.db.tenant_pipeline(ctx.tenant_id) as conn:
            resolved: Resolved | None = await self.resolve_in(conn, provider)
        while resolved is not None:
            row, adapter, sent, reservation = await self._prepare(
                ctx, request, None, True, resolved
            )
            started, t0 = clock.now(), time.perf_counter()
            result: ChatResult | None = None
            began = False
            try:
                async for item in adapter.stream(sent):
                    if isinstance(item, ChatResult):
                        result = storable(item)
                    else:
                        began = True
                        yield item
                assert result is not None, "an adapter stream ends with its result"
            except BaseException as exc:  # includes the consumer closing the stream early
                await self._record_failure(
                    ctx, row, sent, reservation, started, t0, exc, True, adapter.redact
                )
                if began or resolved.then is None or not isinstance(exc, Exception):
                    raise
                resolved = resolved.then
                continue
            yield await self._record(ctx, row, sent, reservation, started, t0, result, True)
            return

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
            "cache_write_tokens": 0,
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
        latency = round((time.perf_counter() - t0) * 1000)
        pending = PendingCall(ctx, row, request, reservation, started, latency, result)
        async with self.db.tenant_connection(ctx.tenant_id) as conn:
            outcome = await self._write(conn, pending, stream)
        await self.settle(pending)
        return outcome

    async def _write(self, conn: Connection, pending: PendingCall, stream: bool) -> CallOutcome:
        wanted = self.priced_as(pending)
        prices = [await store.price_at(conn, *wanted[0])]
        if prices[0] is None and len(wanted) > 1:
            prices.append(await store.price_at(conn, *wanted[1]))
        call, outcome = self._entry(pending, stream, prices)
        result, reservation, row = pending.result, pending.reservation, pending.row
        used = result.prompt_tokens + result.completion_tokens
        # A caller's pipelined connection sends these with its next round trip.
        already = conn.pgconn.pipeline_status != pq.PipelineStatus.OFF
        async with contextlib.nullcontext() if already else conn.pipeline():
            await store.insert_call(conn, call)
            await usage_store.insert_record(conn, _usage(pending.ctx, call))
            if reservation is not None:
                await Budgets.journal(conn, reservation, used)
            if row["tenant_id"] is not None:
                await store.record_health(conn, row["id"], True, call["latency_ms"], None)
        return outcome

    def _entry(
        self,
        pending: PendingCall,
        stream: bool,
        prices: list[dict[str, Any] | None],
    ) -> tuple[dict[str, Any], CallOutcome]:
        """The call's row, priced by the first of `prices` found (see _priced_as)."""
        result = pending.result
        call = self._call_row(
            pending.ctx,
            pending.row,
            pending.request,
            stream,
            pending.reservation,
            pending.started,
            0.0,
        )
        call.update(
            id=pending.id,
            latency_ms=pending.latency_ms,
            response_content=result.content,
            tool_calls=[asdict(c) for c in result.tool_calls] or None,
            finish_reason=result.finish_reason,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            cached_tokens=result.cached_tokens,
            cache_write_tokens=result.cache_write_tokens,
            ttft_ms=result.ttft_ms,
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

    @staticmethod
    def priced_as(pending: PendingCall) -> list[tuple[str, str, str, datetime]]:
        """The prices a pending call may be charged at, in order (store.prices_at): the
        model asked for, else the model that answered."""
        row, request, result = pending.row, pending.request, pending.result
        family = FAMILIES[row["type"]]
        wanted = [(row["name"], family, request.model, pending.started)]
        if result.model and result.model != request.model:
            wanted.append((row["name"], family, result.model, pending.started))
        return wanted

    def ledger(
        self, pending: PendingCall, prices: list[dict[str, Any] | None]
    ) -> tuple[dict[str, Any], dict[str, Any], CallOutcome]:
        """A pending call's LLM call row, usage record and outcome, for a caller that
        writes many calls at once (the runtime's finish batches); `prices` as found for
        priced_as(pending)."""
        call, outcome = self._entry(pending, False, prices)
        return call, _usage(pending.ctx, call), outcome

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
        metrics.llm_call(row["name"], request.model, "failed", latency_ms=call["latency_ms"])
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
        "latency_ms": call["latency_ms"],
    }


async def test_call(
    db: Database, principal: Principal, provider: str, model: str | None = None
) -> TestResult:
    """A provider's test: one short call through the normal path (budgets, recording)
    in one attempt, so that a provider that does not answer says so at once."""
    out = await LLM(db, db.settings).complete(
        CallContext(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
        ),
        ChatRequest(
            messages=[{"role": "user", "content": "Reply with one short sentence."}],
            model=model,
            max_tokens=16,
        ),
        provider=provider,
        attempts=1,
    )
    return TestResult(
        provider=out.provider,
        model=out.result.model,
        latency_ms=out.latency_ms,
        prompt_tokens=out.result.prompt_tokens,
        completion_tokens=out.result.completion_tokens,
        content=out.result.content,
        call_id=out.call_id,
        cost_usd=out.cost_usd,
    )
