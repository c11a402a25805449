"""The call path every agent turn takes: resolve the provider, reserve the budget,
call the model, then record the call (agentplane.llm.recording) and settle the
reservation to its use. A failed call is recorded and its reservation released; a
provider that fails a call gives way to its fallback (agentplane.llm.fallbacks).
Streamed calls: agentplane.llm.streaming. Everything is tenant-scoped."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from typing import Any
from uuid import UUID

from agentplane import clock, metrics
from agentplane.auth.models import Principal
from agentplane.config import Settings
from agentplane.db.pool import Connection, Database
from agentplane.errors import BudgetExceeded, ValidationFailed
from agentplane.llm import in_flight, service, streaming
from agentplane.llm.adapters import adapter_for
from agentplane.llm.adapters.base import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    TextDelta,
    ToolCallDelta,
    storable,
)
from agentplane.llm.context import CallContext, CallOutcome, PendingCall, Resolved, Timing
from agentplane.llm.fallbacks import next_route
from agentplane.llm.models import TestResult
from agentplane.llm.recording import Recorder, priced_as, usage_row
from agentplane.llm.sweep import Sweeper, sweeper_for
from agentplane.llm.tokens import count_tokens, estimate_prompt
from agentplane.usage.budgets import Budgets, Reservation


class LLM:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self.budgets = Budgets(db, settings)
        self.recorder = Recorder(db, self.budgets)

    async def resolve_in(
        self, conn: Connection, provider: str | None, row: Any = service.FETCH
    ) -> Resolved:
        """Resolve the provider on the caller's tenant transaction, for call(resolved=);
        `row` is the provider's row when the caller read it already."""
        chain = await service.resolve(conn, self.settings, provider, row)
        for first, after in itertools.pairwise(chain):
            first.then = after
        return chain[0]

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

    async def prepare(
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
        failure: BaseException | None = None
        # In flight from before its reservation: calls routed meanwhile count it.
        with in_flight.call(self.db, ctx.tenant_id, resolved.row["id"]):
            row, adapter, sent, reservation = await self.prepare(
                ctx, request, None, enforce, resolved)
            started, t0 = clock.now(), time.perf_counter()
            try:
                result = storable(await adapter.complete(sent))
            except BaseException as exc:
                failure = exc
        if failure is not None:
            exc = failure
            then = next_route(exc, resolved)
            last = then is None
            if timing is not None:
                timing.upstream_s += time.perf_counter() - t0
            await self.recorder.record_failure(
                ctx, row, sent, reservation, started, t0, exc, False, adapter.redact,
                call_id if last else None,
            )
            if then is None:
                raise exc
            return await self._complete(ctx, request, then, enforce, call_id, timing)
        if timing is not None:
            timing.upstream_s += time.perf_counter() - t0
        return await self.recorder.record(
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
        failure: BaseException | None = None
        with in_flight.call(self.db, ctx.tenant_id, resolved.row["id"]):
            row, adapter, sent, reservation = await self.prepare(
                ctx, request, None, True, resolved, reserved
            )
            started, t0 = clock.now(), time.perf_counter()
            try:
                result = storable(await adapter.complete(sent))
            except BaseException as exc:
                failure = exc
        if failure is not None:
            exc = failure
            await self.recorder.record_failure(
                ctx, row, sent, reservation, started, t0, exc, False, adapter.redact
            )
            then = next_route(exc, resolved)
            if then is None:
                raise exc
            return await self.call(ctx, request, resolved=then)
        latency = round((time.perf_counter() - t0) * 1000)
        return PendingCall(ctx, row, sent, reservation, started, latency, result)

    async def record_in(self, conn: Connection, pending: PendingCall) -> CallOutcome:
        """Write a pending call, its usage record and its journal entry on the caller's
        transaction. On a pipelined connection this costs the price lookup's round trip;
        the writes go out with the caller's next one."""
        return await self.recorder.write(conn, pending, False)

    async def record(self, pending: PendingCall) -> CallOutcome:
        """Record a pending call in a transaction of its own, then settle its reservation."""
        async with self.db.tenant_connection(pending.ctx.tenant_id) as conn:
            outcome = await self.record_in(conn, pending)
        await self.recorder.settle(pending)
        return outcome

    async def settle(self, pending: PendingCall) -> None:
        """After the transaction that recorded the call has committed (Recorder.settle)."""
        await self.recorder.settle(pending)

    def stream(
        self,
        ctx: CallContext,
        request: ChatRequest,
        *,
        provider: str | None = None,
        resolved: Resolved | None = None,
        call_id: UUID | None = None,
        timing: Timing | None = None,
    ) -> AsyncIterator[TextDelta | ToolCallDelta | CallOutcome]:
        """Deltas as the model produces them, then the recorded CallOutcome
        (streaming.stream). The generator itself is returned, not wrapped, so that a
        caller closing it closes the stream at once."""
        return streaming.stream(
            self, ctx, request, provider=provider, resolved=resolved, call_id=call_id,
            timing=timing,
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
            with in_flight.call(self.db, ctx.tenant_id, row["id"]):
                embedded = await adapter.embed(request)
        except BaseException as exc:
            if timing is not None:
                timing.upstream_s += time.perf_counter() - t0
            await self.recorder.record_failure(
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
        outcome = await self.recorder.record(
            ctx, row, sent, reservation, started, t0, result, False, call_id=call_id
        )
        return embedded, outcome

    priced_as = staticmethod(priced_as)

    def ledger(
        self, pending: PendingCall, prices: list[dict[str, Any] | None]
    ) -> tuple[dict[str, Any], dict[str, Any], CallOutcome]:
        """A pending call's LLM call row, usage record and outcome, for a caller that
        writes many calls at once (the runtime's finish batches); `prices` as found for
        priced_as(pending)."""
        call, outcome = self.recorder.entry(pending, False, prices)
        return call, usage_row(pending.ctx, call), outcome


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
