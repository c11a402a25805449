"""OpenAI's routes: chat completions, the Responses API, embeddings and models, plain
and streamed. Every call goes through agentplane.llm.calls as the runtime's do; errors
answer in OpenAI's shape (GatewayRoute)."""

from __future__ import annotations

import base64
import struct
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response

from agentplane.auth.deps import DB
from agentplane.gateway import cache, responses, store
from agentplane.gateway.chat import Chunks, chat_request, completion
from agentplane.gateway.errors import (
    GatewayRoute,
    ModelNotFound,
    event_error,
    shape,
)
from agentplane.gateway.intake import (
    Invoker,
    call_headers,
    context,
    first_item,
    json_body,
    json_response,
    llm_for,
    parse,
)
from agentplane.gateway.models import ChatCompletionIn, EmbeddingsIn
from agentplane.gateway.stream import END, GONE, KEEPALIVE, SILENT, EventStream, Failed, Pump, sse
from agentplane.llm.adapters.base import EmbedRequest, TextDelta, ToolCallDelta
from agentplane.llm.context import CallOutcome, Timing

router = APIRouter(tags=["gateway"], route_class=GatewayRoute)

DONE = b"data: [DONE]\n\n"
EPOCH = datetime.fromtimestamp(0, UTC)


# -- chat completions ----------------------------------------------------------------------


@router.post("/v1/chat/completions")
async def chat_completions(request: Request, principal: Invoker, db: DB) -> Response:
    """OpenAI's chat completions, plain or streamed (`stream: true`)."""
    body: ChatCompletionIn = parse(ChatCompletionIn, await json_body(request))
    ctx, route = await context(request, db, principal, body.model, "chat.completions")
    chat = chat_request(body, route.context_window, route.model)
    call_id, created = uuid.uuid4(), int(time.time())
    name = f"chatcmpl-{call_id.hex}"
    request.state.timing = timing = Timing()
    llm = llm_for(db)
    if not body.stream:
        read, fill = cache.policy(request, route)
        if read or fill:
            cache_key = cache.key("chat.completions", body.model_dump(by_alias=True))
        if read and (hit := await cache.lookup(db, ctx, route, chat, cache_key, call_id)):
            response = json_response(completion(name, created, route.model, hit),
                                     request, call_id)
            response.headers["x-agentplane-cache"] = "hit"
            return response
        outcome = await llm.complete(
            ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing
        )
        if fill:
            await cache.keep(db, ctx, route, cache_key, outcome.result)
        response = json_response(completion(name, created, route.model, outcome.result),
                                 request, call_id)
        if read or fill:
            response.headers["x-agentplane-cache"] = "miss"
        return response
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    pump = Pump(llm.stream(ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing))
    first = await first_item(request, pump)
    chunks = Chunks(name, created, route.model, include_usage)
    headers = call_headers(request, call_id)
    return EventStream(chat_events(request, pump, chunks, first), pump, headers)


async def chat_events(
    request: Request, pump: Pump, chunks: Chunks, item: Any
) -> AsyncIterator[bytes]:
    keepalive = request.app.state.settings.events_keepalive_seconds
    yield sse(chunks.first())
    while True:
        if item is SILENT:
            yield KEEPALIVE
        elif item is END or item is GONE:
            return
        elif isinstance(item, Failed):
            yield sse(event_error(item.exc))
            return
        elif isinstance(item, TextDelta):
            yield sse(chunks.text(item.text))
        elif isinstance(item, ToolCallDelta):
            yield sse(chunks.tool(item))
        elif isinstance(item, CallOutcome):
            yield sse(chunks.finish(item.result))
            if chunks.include_usage:
                yield sse(chunks.usage(item.result))
            yield DONE
            return
        item = await pump.next(keepalive)


# -- responses ------------------------------------------------------------------------------


@router.post("/v1/responses")
async def create_response(request: Request, principal: Invoker, db: DB) -> Response:
    """OpenAI's Responses API, plain or streamed: text and function tools."""
    body: responses.ResponsesIn = parse(responses.ResponsesIn, await json_body(request))
    ctx, route = await context(request, db, principal, body.model, "responses")
    chat = responses.chat_request(body)
    call_id, created = uuid.uuid4(), int(time.time())
    builder = responses.Builder(f"resp_{call_id.hex}", created, route.model, body)
    request.state.timing = timing = Timing()
    llm = llm_for(db)
    if not body.stream:
        outcome = await llm.complete(
            ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing
        )
        return json_response(builder.response("completed", outcome.result), request, call_id)
    pump = Pump(llm.stream(ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing))
    first = await first_item(request, pump)
    headers = call_headers(request, call_id)
    return EventStream(response_events(request, pump, builder, first), pump, headers)


async def response_events(
    request: Request, pump: Pump, builder: responses.Builder, item: Any
) -> AsyncIterator[bytes]:
    keepalive = request.app.state.settings.events_keepalive_seconds
    yield builder.start()
    while True:
        if item is SILENT:
            yield KEEPALIVE
        elif item is END or item is GONE:
            return
        elif isinstance(item, Failed):
            s = shape(item.exc)
            yield sse({"type": "error", "sequence_number": builder.seq + 1, "code": s.code,
                       "message": s.message, "param": s.param}, "error")
            return
        elif isinstance(item, TextDelta | ToolCallDelta):
            yield builder.delta(item)
        elif isinstance(item, CallOutcome):
            yield builder.finish(item.result)
            return
        item = await pump.next(keepalive)



# -- models ---------------------------------------------------------------------------------


def _model(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "object": "model",
        "created": int(row["created"].timestamp()),
        "owned_by": row["owned_by"],
    }


@router.get("/v1/models")
async def list_models(request: Request, principal: Invoker, db: DB) -> Response:
    """The models this key may name: the tenant's providers' models, its aliases and the
    built-in offline model."""
    async with db.tenant_connection(principal.tenant_id) as conn:
        rows = await store.models(conn)
    return json_response({"object": "list", "data": [_model(r) for r in rows]}, request)


@router.get("/v1/models/{model_id:path}")
async def get_model(model_id: str, request: Request, principal: Invoker, db: DB) -> Response:
    async with db.tenant_connection(principal.tenant_id) as conn:
        rows = [r for r in await store.models(conn) if r["id"] == model_id]
        if not rows and await store.route(conn, model_id):
            # A name that routes but is not listed (a vendor's model by its bare name).
            rows = [{"id": model_id, "owned_by": "agentplane", "created": EPOCH}]
    if not rows:
        raise ModelNotFound(model_id)
    return json_response(_model(rows[0]), request)


# -- embeddings -----------------------------------------------------------------------------


@router.post("/v1/embeddings")
async def embeddings(request: Request, principal: Invoker, db: DB) -> Response:
    body: EmbeddingsIn = parse(EmbeddingsIn, await json_body(request))
    ctx, route = await context(request, db, principal, body.model, "embeddings")
    texts = [body.input] if isinstance(body.input, str) else list(body.input)
    call_id = uuid.uuid4()
    request.state.timing = timing = Timing()
    embedded, _ = await llm_for(db).embed(
        ctx,
        EmbedRequest(texts, dimensions=body.dimensions),
        resolved=route.resolved,
        call_id=call_id,
        timing=timing,
    )
    as_base64 = body.encoding_format == "base64"
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode()
            if as_base64
            else v,
        }
        for i, v in enumerate(embedded.vectors)
    ]
    tokens = embedded.prompt_tokens
    return json_response(
        {
            "object": "list",
            "data": data,
            "model": route.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        },
        request,
        call_id,
    )

