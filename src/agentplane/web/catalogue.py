"""What the tenant has and what it did, page by page: agents (definition, metrics,
instances and heartbeats), sessions, LLM calls (filters, a call with its messages).
Providers and models are in providers.py."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError

from agentplane.agents import service as agents
from agentplane.errors import NotFound, ValidationFailed
from agentplane.llm import service as llm
from agentplane.llm.api import CallFilters
from agentplane.sessions import service as sessions
from agentplane.usage import reports
from agentplane.web import charts, http
from agentplane.web.http import Posted, WebRoute, WebUser
from agentplane.web.templating import duration, money, number, page
from agentplane.workflows.runs import list_runs

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
Action = Annotated[Posted, Depends(http.posted)]
CALL_STATUSES = ("pending", "running", "completed", "failed")
CALLS_PAGE = 50
SESSIONS_PAGE = 50
MAX_FILTER = 200
FILTERS = ("provider", "model", "status", "endpoint", "request_id", "project", "tag",
           "session", "key", "run", "since", "until", "before")
FIELDS = {"session_id": "session", "api_key_id": "key", "run_id": "run"}
"""The API's names of the filters whose form names differ."""


# --- agents -------------------------------------------------------------------------------


@router.get("/agents")
async def list_agents(request: Request, user: User) -> HTMLResponse:
    http.need(user, "agents:read")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        found = await agents.list_(conn)
    return await page(request, user, "agents.html", title="Agents", agents=found)


@router.get("/agents/{slug}")
async def show_agent(request: Request, user: User, slug: str) -> HTMLResponse:
    http.need(user, "agents:read")
    if len(slug) > 50:
        raise NotFound("no such agent")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        agent = await agents.get(conn, slug)
        instances = await agents.list_instances(conn, slug)
        metrics = await reports.agent_metrics(conn, slug, period="day", since="30d",
                                              until=None) if user.can("usage:read") else None
        runs = (await list_runs(conn, agent=slug, limit=10)).items \
            if user.can("runs:read") else []
    series: dict[str, Any] = {}
    if metrics is not None:
        days = {r.period_start: r for r in metrics.rows}
        start, end = metrics.since, metrics.until
        labels = [date.fromordinal(d).isoformat()
                  for d in range(start.toordinal(), end.toordinal() + 1)]
        rows = [days.get(date.fromisoformat(day)) for day in labels]
        series = {
            "tasks": charts.spark([r.tasks_completed + r.tasks_failed if r else 0 for r in rows],
                                  labels, shown=number, name="tasks per day"),
            "tokens": charts.spark([r.total_tokens if r else 0 for r in rows], labels,
                                   shown=number, name="tokens per day"),
            "cost": charts.spark([r.cost_usd if r else 0 for r in rows], labels, shown=money,
                                 name="cost per day"),
            "latency": charts.spark([r.avg_llm_latency_ms or 0 if r else 0 for r in rows],
                                    labels, shown=duration, name="LLM latency per day"),
        }
    return await page(request, user, "agent.html", title=agent.name, agent=agent,
                      instances=instances, series=series, runs=runs)


# --- sessions -----------------------------------------------------------------------------


@router.get("/sessions")
async def list_sessions(request: Request, user: User) -> HTMLResponse:
    """A page at a time, newest first, like the runs list."""
    http.need(user, "sessions:read")
    deleted = request.query_params.get("deleted") == "1"
    cursor = request.query_params.get("cursor") or None
    found, problem = None, None
    if cursor and len(cursor) > 200:
        problem = "not a page of this list: start again from the first"
    else:
        try:
            async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
                found = await sessions.page(conn, None, deleted, SESSIONS_PAGE, cursor)
        except ValidationFailed:
            problem = "not a page of this list: start again from the first"
    return await page(request, user, "sessions.html", title="Sessions",
                      status=422 if problem else 200, sessions=found.items if found else [],
                      next_cursor=found.next_cursor if found else None, problem=problem,
                      deleted=deleted)


@router.get("/sessions/{ref}")
async def show_session(request: Request, user: User, ref: str) -> HTMLResponse:
    http.need(user, "sessions:read")
    session_id = http.parse_uuid(ref, "session")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        session = await sessions.get(conn, str(session_id))
        calls = await llm.list_calls(conn, {"session_id": session_id}, CALLS_PAGE) \
            if user.can("llm:read") else []
    return await page(request, user, "session.html", title="Session", session=session,
                      calls=calls, meter=charts.meter(session.tokens_used
                                                      + session.tokens_reserved,
                                                      session.token_budget))


# --- LLM calls ----------------------------------------------------------------------------


def call_filters(request: Request) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(the service's filters, the form's values, each bad field's problem); the values
    pass the API's own `CallFilters` too, so the page refuses what the API refuses."""
    q = request.query_params
    shown = {k: q.get(k, "").strip() for k in FILTERS}
    problems: dict[str, str] = {}
    for k, v in shown.items():
        if len(v) > MAX_FILTER:
            problems[k] = f"at most {MAX_FILTER} characters"
            shown[k] = v[:MAX_FILTER]
    if shown["status"] and shown["status"] not in CALL_STATUSES:
        problems["status"] = "not a call status"
    values: dict[str, Any] = {k: shown[k] or None
                              for k in ("provider", "model", "status", "endpoint", "request_id",
                                        "project", "tag")}
    for field, name in (("session", "session_id"), ("key", "api_key_id"), ("run", "run_id"),
                        ("before", "before")):
        if shown[field]:
            try:
                values[name] = http.parse_uuid(shown[field], field)
            except NotFound:
                problems[field] = "not an id"
    for field in ("since", "until"):
        if shown[field]:
            try:
                values[field] = datetime.combine(date.fromisoformat(shown[field]),
                                                 datetime.min.time(), UTC)
            except ValueError:
                problems[field] = "a date, YYYY-MM-DD"
    if not problems:
        try:
            CallFilters.model_validate(values)
        except ValidationError as exc:
            for e in exc.errors():
                problems.setdefault(FIELDS.get(str(e["loc"][0]), str(e["loc"][0])), e["msg"])
    return values, shown, problems


@router.get("/llm-calls")
async def list_calls(request: Request, user: User) -> HTMLResponse:
    http.need(user, "llm:read")
    values, shown, problems = call_filters(request)
    calls = []
    if not problems:
        async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
            try:
                calls = await llm.list_calls(conn, values, CALLS_PAGE + 1)
            except NotFound:
                problems["project"] = "no project of that id or slug"
    more = calls[CALLS_PAGE].id if len(calls) > CALLS_PAGE else None
    query = urlencode({k: v for k, v in shown.items() if v and k != "before"})
    return await page(request, user, "llm_calls.html", title="LLM calls",
                      status=422 if problems else 200, calls=calls[:CALLS_PAGE],
                      filters=shown, problems=problems, statuses=CALL_STATUSES, query=query,
                      next_before=calls[CALLS_PAGE - 1].id if more else None)


@router.get("/llm-calls/{ref}")
async def show_call(request: Request, user: User, ref: str) -> HTMLResponse:
    http.need(user, "llm:read")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        call = await llm.get_call(conn, http.parse_uuid(ref, "LLM call"))
    return await page(request, user, "llm_call.html", title="LLM call", call=call)
