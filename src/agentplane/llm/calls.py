"""The call path every agent turn takes: resolve the provider, reserve the budget,
call the model, then in one durable transaction record the LLM call, its usage
record and the tokens used on the reservation (the journal), and finally settle the reservation
to that use. A failed call is recorded and its reservation released. Everything is
tenant-scoped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
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
from agentplane.llm.adapters.base import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    storable,
)
from agentplane.llm.models import TestResult
from agentplane.llm.sweep import Sweeper, sweeper_for
from agentplane.llm.tokens import count_tokens, estimate_prompt
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
    endpoint: str | None = None
    """The gateway route that made the call (chat.completions, messages, ...); None for
    the runtime's own calls."""
    request_id: str | None = None
    """The HTTP request the call answered (its X-Request-ID)."""
    store_content: bool = True
    """False: the call's messages and answer are not recorded (the tenant's privacy
    setting); its parameters, tokens and cost always are."""


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
        reserved: Awaitable[Reservation] | None = None,
    ) -> tuple[dict[str, Any], Any, ChatRequest, Reservation | None]:
        if resolved is None:
            async with self.db.tenant_connection(ctx.tenant_id) as conn:
                resolved = await self.resolve_in(conn, provider)
        row, config = resolved.row, resolved.config
        if resolved.model:
            request = replace(request, model=resolved.model)
        request = self._defaults(request, row)
        if reserved is not None:
            reservation: Reservation | None = await reserved
        else:
            reservation = await self._reserve(ctx, self._worst(request)) if enforce else None
        return row, adapter_for(config), request, reservation

    def reserve_ahead(
        self, ctx: CallContext, request: ChatRequest, resolved: Resolved
    ) -> asyncio.Future[Reservation]:
        """The reservation call(request, resolved=...) would take, taken now in the background:
        a caller that knows its next call early overlaps the reservation's round trip with its
        own work, then passes it to call(reserved=...) or releases it (release)."""
        tokens = self._worst(self._defaults(request, resolved.row))
        return asyncio.ensure_future(self._reserve(ctx, tokens))

    async def release(self, ctx: CallContext, reserved: asyncio.Future[Reservation]) -> None:
        """Give back a reservation from reserve_ahead that no call used."""
        with contextlib.suppress(Exception):
            await self.budgets.settle(ctx.tenant_id, await reserved)

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
                # Reservations left by callers that died may be what refuses this call.
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
        resolved: Resolved | None = None,
        call_id: UUID | None = None,
        timing: Timing | None = None,
    ) -> CallOutcome:
        """One model call. `enforce_budgets=False` is for measuring what budgets cost;
        `attempts` overrides the providers' retries (a test of a provider makes one).
        `resolved`: the route, when the caller resolved it (resolve_in); `call_id`: the id
        of the call's row (the row that ends it: an attempt that gives way to a fallback
        is recorded under an id of its own); `timing`: filled with the provider's time."""
        if resolved is None:
            async with self.db.tenant_pipeline(ctx.tenant_id) as conn:
                resolved = await self.resolve_in(conn, provider)
        if attempts is not None:
            step: Resolved | None = resolved
            while step is not None:
                step.config = replace(step.config, max_retries=attempts - 1)
                step = step.then
        return await self._complete(
            ctx, request, resolved, enforce_budgets, call_id, timing or Timing()
        )

    async def _complete(
        self,
        ctx: CallContext,
        request: ChatRequest,
        resolved: Resolved,
        enforce: bool,
        call_id: UUID | None = None,
        timing: Timing | None = None,
    ) -> CallOutcome:
        row, adapter, sent, reservation = await self._prepare(ctx, request, None, enforce, resolved)
        started, t0 = clock.now(), time.perf_counter()
        try:
            result = storable(await adapter.complete(sent))
        except BaseException as exc:
            last = resolved.then is None or not isinstance(exc, Exception)
            if timing is not None:
                timing.upstream_s += time.perf_counter() - t0
            await self._record_failure(
                ctx, row, sent, reservation, started, t0, exc, False, adapter.redact,
                call_id if last else None,
            )
            if last:
                raise
            return await self._complete(ctx, request, resolved.then, enforce, call_id, timing)  # type: ignore[arg-type]
        if timing is not None:
            timing.upstream_s += time.perf_counter() - t0
        return await self._record(
            ctx, row, sent, reservation, started, t0, result, False, call_id=call_id
        )

    async def call(
        self,
        ctx: CallContext,
        request: ChatRequest,
        *,
        resolved: Resolved,
        reserved: Awaitable[Reservation] | None = None,
    ) -> PendingCall:
        """One model call whose recording the caller folds into its own transaction
        (record_in, then settle after the commit): no transaction of its own when it
        succeeds. A failed call is recorded at once, as by complete(). `reserved`: the call's
        reservation from reserve_ahead, if the caller took it early."""
        row, adapter, sent, reservation = await self._prepare(
            ctx, request, None, True, resolved, reserved
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
        """Record a pending call in a transaction of its own, then settle its reservation."""
        async with self.db.tenant_connection(pending.ctx.tenant_id) as conn:
            outcome = await self.record_in(conn, pending)
        await self.settle(pending)
        return outcome

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

    async def stream(
        self,
        ctx: CallContext,
        request: ChatRequest,
        *,
        provider: str | None = None,
        resolved: Resolved | None = None,
        call_id: UUID | None = None,
        timing: Timing | None = None,
    ) -> AsyncIterator[TextDelta | ToolCallDelta | CallOutcome]:
        """Deltas as the model produces them, then the recorded CallOutcome. A provider
        that fails before its first delta gives way to its fallback, as in complete();
        after one, the caller has text already and gets the error. A stream that ends
        early after its first delta (the caller closes it, or the provider breaks off) is
        charged for what it generated, counted here, and its reservation is released."""
        timing = timing or Timing()
        if resolved is None:
            async with self.db.tenant_pipeline(ctx.tenant_id) as conn:
                resolved = await self.resolve_in(conn, provider)
        route: Resolved | None = resolved
        while route is not None:
            row, adapter, sent, reservation = await self._prepare(ctx, request, None, True, route)
            started, t0 = clock.now(), time.perf_counter()
            result: ChatResult | None = None
            texts: list[str] = []
            calls: dict[int, dict[str, str]] = {}
            items = adapter.stream(sent)
            arrivals: list[float] = []
            try:
                while True:
                    waited = time.perf_counter()
                    try:
                        item = await anext(items)
                    except StopAsyncIteration:
                        break
                    finally:
                        timing.upstream_s += time.perf_counter() - waited
                    if timing.upstream_first_s is None:
                        timing.upstream_first_s = time.perf_counter() - t0
                    if isinstance(item, ChatResult):
                        result = storable(item)
                        continue
                    arrivals.append(time.perf_counter())
                    if isinstance(item, TextDelta):
                        texts.append(item.text)
                    else:
                        call = calls.setdefault(item.index, {"id": "", "name": "", "args": ""})
                        call["id"] = item.id or call["id"]
                        call["name"] += item.name or ""
                        call["args"] += item.arguments
                    yield item
                assert result is not None, "an adapter stream ends with its result"
            except BaseException as exc:  # includes the consumer closing the stream early
                await items.aclose()
                began = bool(texts or calls)
                last = began or route.then is None or not isinstance(exc, Exception)
                if began:
                    partial = self._partial(sent, texts, calls, row)
                    cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
                    status = "cancelled" if cancelled else "failed"
                    error = _error_text(exc, adapter.redact)
                    # Shielded: the reservation must be settled even while the caller is cancelled.
                    await asyncio.shield(
                        self._record(
                            ctx, row, sent, reservation, started, t0, partial, True,
                            call_id=call_id, status=status, error=error,
                            chunks=_chunk_stats(arrivals),
                        )
                    )
                else:
                    await self._record_failure(
                        ctx, row, sent, reservation, started, t0, exc, True, adapter.redact,
                        call_id if last else None,
                    )
                if last:
                    raise
                route = route.then
                continue
            yield await self._record(
                ctx, row, sent, reservation, started, t0, result, True, call_id=call_id,
                chunks=_chunk_stats(arrivals),
            )
            return

    @staticmethod
    def _partial(
        request: ChatRequest,
        texts: list[str],
        calls: dict[int, dict[str, str]],
        row: dict[str, Any],
    ) -> ChatResult:
        """What a stream cut short generated, counted here (at most max_tokens)."""
        content = "".join(texts)
        tool_calls = []
        generated = count_tokens(content) if content else 0
        for _, call in sorted(calls.items()):
            raw = call["args"]
            generated += count_tokens(raw) + count_tokens(call["name"])
            try:
                arguments = json.loads(raw) if raw else {}
            except ValueError:
                arguments = {"_raw": raw}
            tool_calls.append(ToolCall(call["id"], call["name"], arguments))
        return storable(
            ChatResult(
                content=content,
                model=request.model or row.get("model") or "",
                tool_calls=tool_calls,
                prompt_tokens=estimate_prompt(request.messages, request.tools),
                completion_tokens=min(generated, request.max_tokens or generated),
                estimated=True,
            )
        )

    async def embed(
        self,
        ctx: CallContext,
        request: EmbedRequest,
        *,
        resolved: Resolved,
        call_id: UUID | None = None,
        timing: Timing | None = None,
    ) -> tuple[EmbedResult, CallOutcome]:
        """Embeddings of request.input: one call, held and recorded as a chat call is
        (its prompt tokens; no completion)."""
        row, config = resolved.row, resolved.config
        adapter = adapter_for(config)
        model = resolved.model or request.model or row["model"]
        request = replace(request, model=model)
        sent = ChatRequest(
            messages=[{"role": "user", "content": text} for text in request.input],
            model=model,
            max_tokens=0,
            extra={"dimensions": request.dimensions} if request.dimensions else None,
        )
        tokens = sum(count_tokens(text) for text in request.input)
        reservation = await self._reserve(ctx, tokens)
        started, t0 = clock.now(), time.perf_counter()
        try:
            embedded = await adapter.embed(request)
        except BaseException as exc:
            if timing is not None:
                timing.upstream_s += time.perf_counter() - t0
            await self._record_failure(
                ctx, row, sent, reservation, started, t0, exc, False, adapter.redact, call_id
            )
            raise
        if timing is not None:
            timing.upstream_s += time.perf_counter() - t0
        result = ChatResult(
            content="",
            model=embedded.model,
            finish_reason="stop",
            prompt_tokens=embedded.prompt_tokens,
            estimated=embedded.estimated,
        )
        outcome = await self._record(
            ctx, row, sent, reservation, started, t0, result, False, call_id=call_id
        )
        return embedded, outcome

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
            outcome = await self._write(conn, pending, stream, settle_now=True)
        await self.settle(pending)
        return outcome

    async def _write(
        self, conn: Connection, pending: PendingCall, stream: bool, settle_now: bool = False
    ) -> CallOutcome:
        """`settle_now`: the reservation is settled on this transaction, which is the call's own
        and short (one round trip fewer than settling after it; the budget rows stay
        locked until it commits). Otherwise it is journaled, and settled after the
        caller's transaction commits (settle)."""
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
        call_id: UUID | None = None,
    ) -> None:
        call = self._call_row(ctx, row, request, stream, reservation, started, t0)
        if call_id is not None:
            call["id"] = call_id
        cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
        call.update(status="cancelled" if cancelled else "failed", error=_error_text(exc, redact))
        metrics.llm_call(row["name"], request.model, "failed", latency_ms=call["latency_ms"])
        # Shielded: the reservation must be given back even when the caller is being cancelled.
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
        except AgentplaneError as exc:  # the call's own error matters more; the reservation expires
            log.error("could not record a failed LLM call: %s", exc.detail)


def _chunk_stats(arrivals: list[float]) -> dict[str, Any]:
    """A stream's chunk count and the gaps between its chunks, p50 and p99, in ms."""
    gaps = sorted((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
    if not gaps:
        return {"stream_chunks": len(arrivals)}
    return {
        "stream_chunks": len(arrivals),
        "chunk_gap_p50_ms": round(gaps[len(gaps) // 2], 3),
        "chunk_gap_p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 3),
    }


def _error_text(exc: BaseException, redact: Any) -> str:
    if isinstance(exc, AgentplaneError):
        error = exc.detail
    elif isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
        error = "cancelled by the caller"
    else:
        error = f"{type(exc).__name__}: {exc}"
    return redact(error)[:1000]


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
