"""HTTP: the OpenAI-compatible gateway (and Anthropic's messages), and tenants' aliases.

Every call goes through agentplane.llm.calls as the runtime's do: budgets held before
and settled after, one llm_calls row with its usage record and rollups. These routes
answer errors in their vendor's shape (gateway.errors); the alias routes, agentplane's
own API, in problem+json like every other route.
"""

from __future__ import annotations

import base64
import struct
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from pydantic import BaseModel, ValidationError

from agentplane.auth.deps import DB, Principal, conn_for, requires
from agentplane.auth.scopes import MANAGERS
from agentplane.db.pool import Database
from agentplane.errors import NotFound
from agentplane.gateway import aliases, anthropic, responses, routing, store
from agentplane.gateway.aliases import Alias, AliasIn
from agentplane.gateway.chat import Chunks, chat_request, completion
from agentplane.gateway.errors import (
    OVERHEAD,
    AnthropicRoute,
    GatewayRoute,
    InvalidRequest,
    ModelNotFound,
    anthropic_body,
    elapsed_ms,
    event_error,
    openai_body,
    shape,
)
from agentplane.gateway.models import ChatCompletionIn, EmbeddingsIn
from agentplane.gateway.stream import END, GONE, KEEPALIVE, SILENT, EventStream, Failed, Pump, sse
from agentplane.llm.adapters.base import EmbedRequest, TextDelta, ToolCallDelta
from agentplane.llm.calls import LLM, CallContext, CallOutcome, Timing
from agentplane.sessions import service as sessions

router = APIRouter(tags=["gateway"], route_class=GatewayRoute)
anthropic_router = APIRouter(tags=["gateway"], route_class=AnthropicRoute)
aliases_router = APIRouter(tags=["gateway"])

Invoker = Annotated[Principal, Depends(requires("llm:invoke"))]

MAX_BODY_BYTES = 10 * 1024 * 1024
"""A request's body, images included (base64); larger ones are refused with 413."""
DONE = b"data: [DONE]\n\n"
EPOCH = datetime.fromtimestamp(0, UTC)

_llms: weakref.WeakKeyDictionary[Database, LLM] = weakref.WeakKeyDictionary()


def llm_for(db: Database) -> LLM:
    """One LLM per database: its budget reservations are batched across concurrent requests."""
    found = _llms.get(db)
    if found is None:
        found = _llms[db] = LLM(db, db.settings)
    return found


# -- request plumbing ----------------------------------------------------------------------


async def json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(
            f"We could not parse the JSON body of your request ({exc.msg}). The body must "
            "be a JSON object."
        ) from None


def parse(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = _where(first["loc"])
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidRequest(f"{param}: {message}" if param else message, param=param) from None


# The tags pydantic puts in a location after a list index: a message's role, a content
# part's type (a discriminated union's branch, not a field).
_TAGS = {"system", "developer", "user", "assistant", "tool", "text", "image_url",
         "input_audio", "file", "refusal"}


def _where(loc: tuple[Any, ...]) -> str | None:
    """A location as OpenAI names a parameter: messages[0].content."""
    out, previous = "", None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif (isinstance(previous, int) and part in _TAGS) or part == "str" or (
            str(part).startswith(("list[", "tagged-union[", "function-"))
        ):
            pass  # a union's branch
        else:
            out += f".{part}" if out else str(part)
        previous = part
    return out or None


async def context(
    request: Request, db: Database, principal: Principal, name: str, endpoint: str
) -> tuple[CallContext, routing.Route]:
    """The call's context and route, read in one transaction: the session named by
    x-agentplane-session (its id or external id, in the caller's tenant) and the model."""
    ref = request.headers.get("x-agentplane-session")
    session_id = None
    tenant_id = principal.tenant_id
    if not ref and routing.cached(tenant_id, name) is not None:
        route = await routing.resolve(None, db.settings, name, tenant_id)
    else:
        session_id, route = await _read_context(db, principal, name, ref)
    ctx = CallContext(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
        session_id=session_id,
        endpoint=endpoint,
        request_id=getattr(request.state, "request_id", None),
        store_content=route.store_content,
    )
    return ctx, route


async def _read_context(
    db: Database, principal: Principal, name: str, ref: str | None
) -> tuple[UUID | None, routing.Route]:
    session_id = None
    async with db.tenant_pipeline(principal.tenant_id) as conn:
        if ref:
            try:
                session_id = (await sessions.get(conn, ref.strip(), principal.user_id)).id
            except NotFound:
                raise NotFound(
                    f"session {ref} not found (x-agentplane-session names a session of "
                    "this tenant by its id or external id)",
                    param="x-agentplane-session",
                    code="session_not_found",
                ) from None
        route = await routing.resolve(conn, db.settings, name, principal.tenant_id)
    return session_id, route


def json_response(body: Any, request: Request, call_id: UUID | None = None) -> Response:
    headers = {OVERHEAD: f"{elapsed_ms(request):.2f}"}
    if call_id is not None:
        headers["x-agentplane-call-id"] = str(call_id)
    return Response(orjson.dumps(body), 200, headers=headers, media_type="application/json")


async def first_item(request: Request, pump: Pump) -> Any:
    """The stream's first item, or SILENT if the provider says nothing for a keep-alive
    interval (the stream then starts, with keep-alives); a failure before it is raised."""
    first = await pump.next(request.app.state.settings.events_keepalive_seconds)
    if isinstance(first, Failed):
        await pump.close()
        raise first.exc
    return first


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
        outcome = await llm.complete(
            ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing
        )
        return json_response(completion(name, created, route.model, outcome.result),
                             request, call_id)
    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    pump = Pump(llm.stream(ctx, chat, resolved=route.resolved, call_id=call_id, timing=timing))
    first = await first_item(request, pump)
    chunks = Chunks(name, created, route.model, include_usage)
    headers = {OVERHEAD: f"{elapsed_ms(request):.2f}", "x-agentplane-call-id": str(call_id)}
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
    headers = {OVERHEAD: f"{elapsed_ms(request):.2f}", "x-agentplane-call-id": str(call_id)}
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


# -- Anthropic's messages -------------------------------------------------------------------


@anthropic_router.post("/v1/messages")
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


# -- aliases (agentplane's own API: problem+json) ------------------------------------------


AliasReader = conn_for("llm:read")
AliasWriter = conn_for("llm:write", roles=MANAGERS)


@aliases_router.post("/v1/gateway/aliases", status_code=201)
async def create_alias(body: AliasIn, conn: AliasWriter) -> Alias:
    """A virtual model: calls to its name go to its deployments, tried in turn until one
    answers (weighted: an order drawn by weight; priority: as listed; latency: the
    fastest provider lately first; cost: the cheapest first)."""
    return await aliases.create(conn, body)


@aliases_router.get("/v1/gateway/aliases")
async def list_aliases(conn: AliasReader) -> list[Alias]:
    return await aliases.list_(conn)


@aliases_router.delete("/v1/gateway/aliases/{name}", status_code=204)
async def delete_alias(name: str, conn: AliasWriter) -> Response:
    await aliases.delete(conn, name)
    return Response(status_code=204)


# -- installing -----------------------------------------------------------------------------

OPENAI_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
ANTHROPIC_PATHS = ("/v1/messages",)


def _too_large(anthropic: bool) -> Any:
    def body(detail: str) -> bytes:
        s = shape(InvalidRequest(detail))
        s.status, s.code = 413, "request_too_large"
        return orjson.dumps(anthropic_body(s) if anthropic else openai_body(s))

    return body


def install(app: FastAPI) -> None:
    """The gateway's routes on `app`, with their own body limit."""
    app.include_router(router)
    app.include_router(anthropic_router)
    app.include_router(aliases_router)
    limits = dict(getattr(app.state, "body_limits", None) or {})
    for path in OPENAI_PATHS:
        limits[path] = (MAX_BODY_BYTES, _too_large(False))
    for path in ANTHROPIC_PATHS:
        limits[path] = (MAX_BODY_BYTES, _too_large(True))
    app.state.body_limits = limits
