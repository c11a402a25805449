"""The gateway's request plumbing: the JSON body parsed into its model (errors naming
the parameter as OpenAI does), the call's context and route read in one transaction,
the first item of a stream, and plain JSON answers with the overhead header."""

from __future__ import annotations

import re
import time
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
from agentplane.tenancy import store as tenancy_store

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


TAG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=/-]{0,63}$")
MAX_TAGS = 20
# (tenant, project ref) -> (until, project id): as routes are, for ROUTE_TTL_S.
_projects: dict[tuple[UUID, str], tuple[float, UUID]] = {}


def tags_of(request: Request) -> tuple[str, ...]:
    """x-agentplane-tags: comma-separated tags, each 1 to 64 letters, digits or _.:=/-."""
    raw = request.headers.get("x-agentplane-tags")
    if raw is None:
        return ()
    tags = tuple(dict.fromkeys(t.strip() for t in raw.split(",") if t.strip()))
    bad = next((t for t in tags if not TAG.match(t)), None)
    if bad is not None or len(tags) > MAX_TAGS:
        problem = (f"tag {bad[:80]!r} is not 1 to 64 letters, digits or _.:=/- starting with "
                   "a letter or digit" if bad is not None else f"more than {MAX_TAGS} tags")
        raise InvalidRequest(f"x-agentplane-tags: {problem}", param="x-agentplane-tags")
    return tags


def _cached_project(tenant_id: UUID, ref: str) -> UUID | None:
    found = _projects.get((tenant_id, ref))
    return found[1] if found is not None and found[0] > time.monotonic() else None


async def context(
    request: Request, db: Database, principal: Principal, name: str, endpoint: str
) -> tuple[CallContext, routing.Route]:
    """The call's context and route, read in one transaction: the session named by
    x-agentplane-session (its id or external id, in the caller's tenant), the project
    named by x-agentplane-project (its id or slug) and the model."""
    ref = request.headers.get("x-agentplane-session")
    project = (request.headers.get("x-agentplane-project") or "").strip() or None
    tags = tags_of(request)
    session_id = None
    tenant_id = principal.tenant_id
    project_id = _cached_project(tenant_id, project) if project else None
    if not ref and (project_id or not project) and routing.cached(tenant_id, name) is not None:
        route = await routing.resolve(None, db.settings, name, tenant_id)
    else:
        session_id, project_id, route = await _read_context(db, principal, name, ref, project)
    ctx = CallContext(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
        session_id=session_id,
        endpoint=endpoint,
        request_id=getattr(request.state, "request_id", None),
        store_content=route.store_content,
        project_id=project_id,
        tags=tags,
    )
    return ctx, route


async def _read_context(
    db: Database, principal: Principal, name: str, ref: str | None, project: str | None
) -> tuple[UUID | None, UUID | None, routing.Route]:
    session_id = project_id = None
    async with db.tenant_pipeline(principal.tenant_id) as conn:
        if project:
            project_id = await tenancy_store.project_id_of(conn, project)
            if project_id is None:
                raise NotFound(
                    f"project {project} not found (x-agentplane-project names a project of "
                    "this tenant by its id or slug)",
                    param="x-agentplane-project", code="project_not_found",
                )
            if len(_projects) >= 4096:
                _projects.clear()
            _projects[(principal.tenant_id, project)] = (
                time.monotonic() + routing.ROUTE_TTL_S, project_id)
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
    return session_id, project_id, route


def call_headers(request: Request, call_id: UUID | None = None) -> dict[str, str]:
    """What every answer of a call carries: the gateway's overhead so far, the call's id."""
    headers = {OVERHEAD: f"{elapsed_ms(request):.2f}"}
    if call_id is not None:
        headers["x-agentplane-call-id"] = str(call_id)
    return headers


def json_response(body: Any, request: Request, call_id: UUID | None = None) -> Response:
    return Response(orjson.dumps(body), 200, headers=call_headers(request, call_id),
                    media_type="application/json")


async def first_item(request: Request, pump: Pump) -> Any:
    """The stream's first item, or SILENT if the provider says nothing for a keep-alive
    interval (the stream then starts, with keep-alives); a failure before it is raised."""
    first = await pump.next(request.app.state.settings.events_keepalive_seconds)
    if isinstance(first, Failed):
        await pump.close()
        raise first.exc
    return first

