"""The gateway's request plumbing: the JSON body parsed into its model (errors naming
the parameter as OpenAI does), the call's context and route read in one transaction,
the first item of a stream, and plain JSON answers with the overhead header."""

from __future__ import annotations

import weakref
from typing import Annotated, Any
from uuid import UUID

import orjson
from fastapi import Depends, Request, Response
from pydantic import BaseModel, ValidationError

from agentplane.auth.deps import Principal, requires
from agentplane.db.pool import Database
from agentplane.errors import NotFound
from agentplane.gateway import routing
from agentplane.gateway.errors import OVERHEAD, InvalidRequest, elapsed_ms
from agentplane.gateway.stream import Failed, Pump
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext
from agentplane.sessions import service as sessions

Invoker = Annotated[Principal, Depends(requires("llm:invoke"))]

_llms: weakref.WeakKeyDictionary[Database, LLM] = weakref.WeakKeyDictionary()


def llm_for(db: Database) -> LLM:
    """One LLM per database: its budget reservations are batched across concurrent requests."""
    found = _llms.get(db)
    if found is None:
        found = _llms[db] = LLM(db, db.settings)
    return found

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

