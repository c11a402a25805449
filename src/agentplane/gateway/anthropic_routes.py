"""Anthropic's messages route, plain or streamed with Anthropic's event types, for the
Anthropic SDK (`x-api-key`); errors answer in Anthropic's shape (AnthropicRoute)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response

from agentplane.auth.deps import DB
from agentplane.gateway import anthropic
from agentplane.gateway.errors import (
    OVERHEAD,
    AnthropicRoute,
    InvalidRequest,
    anthropic_body,
    elapsed_ms,
    shape,
)
from agentplane.gateway.intake import (
    Invoker,
    context,
    first_item,
    json_body,
    json_response,
    llm_for,
    parse,
)
from agentplane.gateway.stream import END, GONE, SILENT, EventStream, Failed, Pump, sse
from agentplane.llm.adapters.base import TextDelta, ToolCallDelta
from agentplane.llm.context import CallOutcome, Timing

router = APIRouter(tags=["gateway"], route_class=AnthropicRoute)


@router.post("/v1/messages")
async def messages(request: Request, principal: Invoker, db: DB) -> Response:
    """Anthropic's messages, plain or streamed, for the Anthropic SDK (`x-api-key`)."""
    body: anthropic.MessagesIn = parse(anthropic.MessagesIn, await json_body(request))
    ctx, route = await context(request, db, principal, body.model, "messages")
    chat = anthropic.chat_request(body)
    if route.context_window is not None and body.max_tokens > route.context_window:
        raise InvalidRequest(
            f"max_tokens: {body.max_tokens} > {route.context_window}, the context window "
            f"of {route.model}", param="max_tokens")
    call_id = uuid.uuid4()
    name = f"msg_{call_id.hex}"
    request.state.timing = timing = Timing()
    llm = llm_for(db)
    if not body.stream:
        outcome = await llm.complete(
            ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing
        )
        return json_response(anthropic.message(name, route.model, outcome.result), request,
                             call_id)
    pump = Pump(llm.stream(ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing))
    first = await first_item(request, pump)
    events = anthropic.Events(name, route.model, chat)
    headers = {OVERHEAD: f"{elapsed_ms(request):.2f}", "x-agentplane-call-id": str(call_id)}
    return EventStream(message_events(request, pump, events, first), pump, headers)


async def message_events(
    request: Request, pump: Pump, events: anthropic.Events, item: Any
) -> AsyncIterator[bytes]:
    keepalive = request.app.state.settings.events_keepalive_seconds
    yield events.start()
    while True:
        if item is SILENT:
            yield sse({"type": "ping"}, "ping")
        elif item is END or item is GONE:
            return
        elif isinstance(item, Failed):
            yield sse(anthropic_body(shape(item.exc)), "error")
            return
        elif isinstance(item, TextDelta | ToolCallDelta):
            yield events.delta(item)
        elif isinstance(item, CallOutcome):
            yield events.finish(item.result)
            return
        item = await pump.next(keepalive)

