"""The response cache of a tenant that turns it on (its settings' `llm_cache_ttl_s`):
a chat completion asked again with the same normalised request within that many seconds
gets the answer given before, with no provider called. The hit is recorded as a call of
its own (`cached`, cost 0 from `cache`, no tokens spent, no reservation), so the cache
shows in `GET /v1/llm-calls?cached=true`. A request with `Cache-Control: no-store`
neither reads nor fills the cache; `no-cache` does not read it but fills it. A tenant
that keeps no content of its calls (`"llm_content": "drop"`) has no cache: an answer
kept would be content kept. Streamed requests are neither answered from it nor fill it."""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, replace
from decimal import Decimal
from typing import Any

import orjson
from fastapi import Request

from agentplane import clock
from agentplane.db.pool import Database
from agentplane.gateway import store
from agentplane.gateway.routing import Route
from agentplane.llm import store as llm_store
from agentplane.llm.adapters.base import ChatRequest, ChatResult, ToolCall
from agentplane.llm.context import CallContext
from agentplane.llm.recording import Recorder

# Parameters that change how an answer is delivered, not what it says.
DELIVERY = {"stream", "stream_options"}


def policy(request: Request, route: Route) -> tuple[bool, bool]:
    """(read the cache, fill it) for this request."""
    if route.cache_ttl_s <= 0 or not route.store_content:  # privacy wins: no answer kept
        return False, False
    directives = {d.strip().lower() for d in request.headers.get("cache-control", "").split(",")}
    if "no-store" in directives:
        return False, False
    return "no-cache" not in directives, True


def key(endpoint: str, body: dict[str, Any]) -> bytes:
    """The normalised request: its parameters, keys sorted, delivery ones left out."""
    kept = {k: v for k, v in body.items() if k not in DELIVERY and v is not None}
    return hashlib.sha256(
        orjson.dumps([endpoint, kept], option=orjson.OPT_SORT_KEYS)
    ).digest()


def answer(result: ChatResult) -> dict[str, Any]:
    return {
        "content": result.content,
        "model": result.model,
        "finish_reason": result.finish_reason,
        "tool_calls": [asdict(c) for c in result.tool_calls],
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "reasoning_tokens": result.reasoning_tokens,
    }


def result_of(saved: dict[str, Any]) -> ChatResult:
    return ChatResult(
        content=saved["content"],
        model=saved["model"],
        finish_reason=saved["finish_reason"],
        tool_calls=[ToolCall(**c) for c in saved["tool_calls"]],
        prompt_tokens=saved["prompt_tokens"],
        completion_tokens=saved["completion_tokens"],
        reasoning_tokens=saved["reasoning_tokens"],
    )


async def lookup(
    db: Database, ctx: CallContext, route: Route, chat: ChatRequest, cache_key: bytes,
    call_id: Any,
) -> ChatResult | None:
    """The answer kept for this request, recorded as a cached call on the same
    transaction; None when there is none."""
    t0, started = time.perf_counter(), clock.now()
    async with db.tenant_pipeline(ctx.tenant_id) as conn:
        saved = await store.cached_answer(conn, cache_key)
        if saved is None:
            return None
        result = result_of(saved)
        sent = replace(chat, model=route.model)
        call = Recorder.call_row(ctx, route.resolved.row, sent, False, None, started, t0)
        keep = ctx.store_content
        call.update(
            id=call_id,
            response_content=result.content if keep else None,
            tool_calls=saved["tool_calls"] or None if keep else None,
            finish_reason=result.finish_reason,
            cost_usd=Decimal(0),
            cost_source="cache",
            cached=True,
        )
        await llm_store.insert_call(conn, call)
    return result


async def keep(
    db: Database, ctx: CallContext, route: Route, cache_key: bytes, result: ChatResult
) -> None:
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await store.keep_answer(conn, cache_key, route.model, answer(result), route.cache_ttl_s)
