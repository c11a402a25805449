"""Streamed calls: deltas passed on as the provider sends them, then the call recorded
with its chunk statistics; a stream cut short is charged for what it generated."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from uuid import UUID

from agentplane import clock
from agentplane.llm import in_flight
from agentplane.llm.adapters.base import (
    ChatRequest,
    ChatResult,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    storable,
)
from agentplane.llm.context import CallContext, CallOutcome, Resolved, Timing
from agentplane.llm.fallbacks import next_route
from agentplane.llm.recording import error_text
from agentplane.llm.tokens import count_tokens, estimate_prompt

if TYPE_CHECKING:
    from agentplane.llm.calls import LLM


async def stream(
    llm: LLM,
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
        async with llm.db.tenant_pipeline(ctx.tenant_id) as conn:
            resolved = await llm.resolve_in(conn, provider)
    route: Resolved | None = resolved
    while route is not None:
        # In flight from before its reservation (calls routed meanwhile count it) until
        # the stream ends.
        with in_flight.call(llm.db, ctx.tenant_id, route.row["id"]):
            row, adapter, sent, reservation = await llm.prepare(ctx, request, None, True, route)
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
                then = None if began else next_route(exc, route)
                last = then is None
                if began:
                    cut = partial(sent, texts, calls, row)
                    cancelled = isinstance(exc, asyncio.CancelledError | GeneratorExit)
                    status = "cancelled" if cancelled else "failed"
                    error = error_text(exc, adapter.redact)
                    # Shielded: the reservation must be settled even while the caller is cancelled.
                    await asyncio.shield(
                        llm.recorder.record(
                            ctx, row, sent, reservation, started, t0, cut, True,
                            call_id=call_id, status=status, error=error,
                            chunks=chunk_stats(arrivals),
                        )
                    )
                else:
                    await llm.recorder.record_failure(
                        ctx, row, sent, reservation, started, t0, exc, True, adapter.redact,
                        call_id if last else None,
                    )
                if last:
                    raise
                route = then
                continue
        yield await llm.recorder.record(
            ctx, row, sent, reservation, started, t0, result, True, call_id=call_id,
            chunks=chunk_stats(arrivals),
        )
        return


def partial(
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


def chunk_stats(arrivals: list[float]) -> dict[str, Any]:
    """A stream's chunk count and the gaps between its chunks, p50 and p99, in ms."""
    gaps = sorted((b - a) * 1000 for a, b in itertools.pairwise(arrivals))
    if not gaps:
        return {"stream_chunks": len(arrivals)}
    return {
        "stream_chunks": len(arrivals),
        "chunk_gap_p50_ms": round(gaps[len(gaps) // 2], 3),
        "chunk_gap_p99_ms": round(gaps[min(len(gaps) - 1, int(len(gaps) * 0.99))], 3),
    }
