"""Runs: the filtered, cursor-paged list with live status, and a run: its DAG, task
tree with agent executions and their transitions, the waterfall of its LLM and tool
calls (paged, bodies loaded when opened), input requests answered in place, its events
live over SSE, and the buttons that pause, resume, cancel and retry."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from agentplane import clock
from agentplane.errors import NotFound, ValidationFailed
from agentplane.events import service as events
from agentplane.events.models import Event
from agentplane.events.stream import hub_for
from agentplane.llm import service as llm
from agentplane.web import charts, graph, http
from agentplane.web.http import Posted, WebRoute, WebUser
from agentplane.web.templating import fragment, page, render
from agentplane.workflows import control, runs
from agentplane.workflows.models import TERMINAL, Run, RunTree

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
Action = Annotated[Posted, Depends(http.posted)]
STATUSES = ("pending", "running", "paused", "completed", "failed", "cancelled")
PAGE = 50
CALLS_PAGE = 100
EVENTS_SHOWN = 100
MAX_FILTER = 100
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# Events after which the run's header, DAG and tasks are read again.
CHANGES = ("run.", "task.", "agent.state_changed", "input.")


# --- the list ---------------------------------------------------------------------------


def _day(text: str, name: str, problems: dict[str, str]) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC)
    except ValueError:
        problems[name] = "a date, YYYY-MM-DD"
        return None


def run_filters(request: Request) -> tuple[dict[str, Any], dict[str, str], dict[str, str]]:
    """(the service's filters, the form's values, each bad field's problem)."""
    q = request.query_params
    shown = {k: q.get(k, "").strip() for k in ("status", "workflow", "agent", "since", "until")}
    problems: dict[str, str] = {}
    for key, value in shown.items():
        if len(value) > MAX_FILTER:
            problems[key] = f"at most {MAX_FILTER} characters"
            shown[key] = value[:MAX_FILTER]
    if shown["status"] and shown["status"] not in STATUSES:
        problems["status"] = "not a run status"
    since = _day(shown["since"], "since", problems)
    until = _day(shown["until"], "until", problems)
    filters = {
        "status": shown["status"] or None,
        "workflow": shown["workflow"] or None,
        "agent": shown["agent"] or None,
        "since": since,
        "until": until + timedelta(days=1) if until else None,
    }
    return filters, shown, problems


async def _runs(request: Request, user: WebUser) -> dict[str, Any]:
    http.need(user, "runs:read")
    filters, shown, problems = run_filters(request)
    cursor = request.query_params.get("cursor") or None
    if cursor and len(cursor) > 200:
        problems["cursor"] = "not a page of this list"
    items: list[Run] = []
    next_cursor = None
    if not problems:
        try:
            async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
                found = await runs.list_runs(conn, cursor=cursor, limit=PAGE, **filters)
            items, next_cursor = found.items, found.next_cursor
        except ValidationFailed:
            problems["cursor"] = "not a page of this list: start again from the first"
    query = "&".join(f"{k}={v}" for k, v in shown.items() if v)
    return {"runs": items, "next_cursor": next_cursor, "filters": shown, "problems": problems,
            "statuses": STATUSES, "query": query, "first": cursor is None}


@router.get("/runs")
async def list_runs(request: Request, user: User) -> HTMLResponse:
    context = await _runs(request, user)
    return await page(request, user, "runs.html", title="Runs",
                      status=422 if context["problems"] else 200, **context)


@router.get("/runs/rows")
async def runs_rows(request: Request, user: User) -> HTMLResponse:
    """The list's table body, for its live refresh and its next pages."""
    context = await _runs(request, user)
    return fragment("_runs_rows.html", user=user, **context)


@router.get("/runs/live")
async def runs_live(request: Request, user: User) -> StreamingResponse:
    """Server-Sent Events: `run` whenever one of the tenant's runs starts, pauses or
    ends (the list reads its rows again)."""
    http.need(user, "runs:read", "events:read")
    db = http.db_of(request)
    stream = events.follow_tenant(db, hub_for(db), tenant_id=user.tenant_id,
                                  keepalive=db.settings.events_keepalive_seconds)

    async def frames() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for item in stream:
            if isinstance(item, str):
                yield b": keep-alive\n\n"
            else:
                yield f"event: run\ndata: {item.run_id}\n\n".encode()

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


# --- a run ------------------------------------------------------------------------------


def _dag(tree: RunTree) -> Any:
    nodes = [
        graph.Node(key=str(t["id"]), label=t["node"], sub=t["agent"], status=t["status"],
                   href=f"#task-{t['id']}")
        for t in tree.tasks
    ]
    edges = [(str(d), str(t["id"])) for t in tree.tasks for d in t["depends_on"]]
    edges += [(str(t["parent_task_id"]), str(t["id"])) for t in tree.tasks
              if t["parent_task_id"] is not None]
    return graph.draw(nodes, edges, name="the run's tasks")


def _span(run: Run) -> tuple[datetime, float]:
    start = run.started_at or run.created_at
    end = run.completed_at or clock.now()
    return start, max((end - start).total_seconds() * 1000, 1.0)


def waterfall(run: Run, calls: list[Any]) -> list[dict[str, Any]]:
    start, span = _span(run)
    rows = []
    for c in calls:
        offset = (c.created_at - start).total_seconds() * 1000
        length = c.duration_ms or 0
        label = f"{c.name}: {length} ms" if c.duration_ms is not None else c.name
        rows.append({"call": c, "offset_ms": offset,
                     "bar": charts.span(offset / span, length / span, kind=c.kind,
                                        failed=c.status == "failed", label=label)})
    return rows


async def _load(request: Request, user: WebUser, run_ref: str) -> dict[str, Any]:
    http.need(user, "runs:read")
    run_id = http.parse_uuid(run_ref, "run")
    db = http.db_of(request)
    async with db.tenant_connection(user.tenant_id) as conn:
        tree = await runs.run_tree(conn, run_id, calls=False)
        calls = await runs.run_calls(conn, run_id, limit=CALLS_PAGE)
    history: list[Event] = []
    if user.can("events:read"):
        history = (await events.history(db, tenant_id=user.tenant_id, run_id=run_id,
                                        tail=EVENTS_SHOWN)).events
    return _context(tree, calls.items, calls.next_cursor, history)


def _context(tree: RunTree, calls: list[Any], next_cursor: str | None,
             history: list[Event]) -> dict[str, Any]:
    run = tree.run
    pending = [r for r in tree.input_requests if r["status"] == "pending"]
    return {
        "run": run,
        "tree": tree,
        "dag": _dag(tree),
        "calls": waterfall(run, calls),
        "next_calls": next_cursor,
        "events": history,
        "last_seq": history[-1].seq if history else 0,
        "live": run.status not in TERMINAL,
        "pending": pending,
        "failed_tasks": [t for t in tree.tasks if t["status"] == "failed"],
    }


@router.get("/runs/{run_ref}")
async def show_run(request: Request, user: User, run_ref: str) -> HTMLResponse:
    context = await _load(request, user, run_ref)
    return await page(request, user, "run.html", title=f"Run {context['run'].id.hex[:8]}",
                      **context, answer_errors={})


@router.get("/runs/{run_ref}/part/{part}")
async def run_part(request: Request, user: User, run_ref: str, part: str) -> HTMLResponse:
    """A part of the run's page read again after a change: header, tasks or requests."""
    if part not in ("header", "tasks", "requests"):
        raise NotFound("no such part of a run's page")
    http.need(user, "runs:read")
    run_id = http.parse_uuid(run_ref, "run")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        tree = await runs.run_tree(conn, run_id, calls=False)
    return fragment(f"_run_{part}.html", user=user, csrf=user.csrf, answer_errors={},
                    **_context(tree, [], None, []))


@router.get("/runs/{run_ref}/calls")
async def run_calls(request: Request, user: User, run_ref: str) -> HTMLResponse:
    """The next page of the waterfall (rows and a button for the page after)."""
    http.need(user, "runs:read")
    run_id = http.parse_uuid(run_ref, "run")
    task = request.query_params.get("task")
    cursor = request.query_params.get("cursor") or None
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        run = await runs.get_run(conn, run_id)
        found = await runs.run_calls(
            conn, run_id, task_id=http.parse_uuid(task, "task") if task else None,
            cursor=cursor[:200] if cursor else None, limit=CALLS_PAGE)
    return fragment("_calls_rows.html", run=run, calls=waterfall(run, found.items),
                    next_calls=found.next_cursor)


@router.get("/runs/{run_ref}/calls/{call_ref}")
async def call_body(request: Request, user: User, run_ref: str, call_ref: str) -> HTMLResponse:
    """An LLM call's messages and answer, loaded when its row is opened."""
    http.need(user, "runs:read", "llm:read")
    run_id = http.parse_uuid(run_ref, "run")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        call = await llm.get_call(conn, http.parse_uuid(call_ref, "LLM call"))
    if call.run_id != run_id:
        raise NotFound(f"LLM call {call.id} not found in run {run_id}")
    return fragment("_call_body.html", call=call)


@router.get("/runs/{run_ref}/tools/{tool_ref}")
async def tool_body(request: Request, user: User, run_ref: str, tool_ref: str) -> HTMLResponse:
    http.need(user, "runs:read")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        tool = await runs.get_tool_execution(
            conn, http.parse_uuid(run_ref, "run"), http.parse_uuid(tool_ref, "tool call"))
    return fragment("_tool_body.html", tool=tool)


@router.get("/runs/{run_ref}/live")
async def run_live(request: Request, user: User, run_ref: str) -> StreamingResponse:
    """Server-Sent Events for the run's page: `event` (an HTML row of the log) for each
    stored event after `after`, `change` after a batch that moved the run, its tasks or
    its agents, and `end` after the run's terminal event."""
    http.need(user, "runs:read", "events:read")
    run_id = http.parse_uuid(run_ref, "run")
    try:
        after = max(0, int(request.query_params.get("after", "0")))
    except ValueError:
        after = 0
    db = http.db_of(request)
    try:
        batches = await events.open_stream(db, hub_for(db), tenant_id=user.tenant_id,
                                           run_id=run_id, after=after,
                                           keepalive=db.settings.events_keepalive_seconds)
    except ValidationFailed:  # a cursor beyond the log (a page of another database)
        batches = await events.open_stream(db, hub_for(db), tenant_id=user.tenant_id,
                                           run_id=run_id, after=0,
                                           keepalive=db.settings.events_keepalive_seconds)

    async def frames() -> AsyncIterator[bytes]:
        yield b"retry: 2000\n\n"
        async for batch in batches:
            if isinstance(batch, str):
                yield b": keep-alive\n\n"
                continue
            out = []
            changed = False
            for e in batch:
                if e.seq is None:
                    continue  # unstored deltas: the log shows stored events only
                html = render("_event.html", e=e).replace("\n", "")
                out.append(f"id: {e.seq}\nevent: event\ndata: {html}\n\n")
                changed = changed or e.type.startswith(CHANGES)
            if changed:
                out.append("event: change\ndata: change\n\n")
            if out:
                yield "".join(out).encode()
        # The stream ends with the run (after its terminal event): the page stops too.
        yield b"event: end\ndata: end\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


# --- actions ----------------------------------------------------------------------------


async def _act(request: Request, action: Posted, run_ref: str, what: str,
               task_ref: str | None = None) -> Response:
    http.need(action.user, "runs:write")
    run_id = http.parse_uuid(run_ref, "run")
    db = http.db_of(request)
    async with db.tenant_connection(action.user.tenant_id) as conn:
        if what == "cancelled":
            await control.cancel_run(conn, run_id)
        elif what == "paused":
            await control.pause_run(conn, run_id)
        elif what == "resumed":
            await control.resume_run(conn, db, run_id)
        else:
            assert task_ref is not None
            await control.retry_task(conn, db, run_id, http.parse_uuid(task_ref, "task"))
    return http.redirect(request, f"/runs/{run_id}?notice={what}")


@router.post("/runs/{run_ref}/cancel")
async def cancel(request: Request, action: Action, run_ref: str) -> Response:
    return await _act(request, action, run_ref, "cancelled")


@router.post("/runs/{run_ref}/pause")
async def pause(request: Request, action: Action, run_ref: str) -> Response:
    return await _act(request, action, run_ref, "paused")


@router.post("/runs/{run_ref}/resume")
async def resume(request: Request, action: Action, run_ref: str) -> Response:
    return await _act(request, action, run_ref, "resumed")


@router.post("/runs/{run_ref}/tasks/{task_ref}/retry")
async def retry(request: Request, action: Action, run_ref: str, task_ref: str) -> Response:
    return await _act(request, action, run_ref, "retried", task_ref)


def parse_answer(text: str) -> Any:
    """What a person typed: JSON when it is JSON (`true`, `{"approved": true}`), else
    the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


@router.post("/runs/{run_ref}/input-requests/{request_ref}/answer")
async def answer(request: Request, action: Action, run_ref: str, request_ref: str) -> Response:
    http.need(action.user, "runs:write")
    run_id = http.parse_uuid(run_ref, "run")
    request_id = http.parse_uuid(request_ref, "input request")
    db = http.db_of(request)
    response = parse_answer(action.form.get("response", ""))
    try:
        async with db.tenant_connection(action.user.tenant_id) as conn:
            found = await control.list_input_requests(conn, run_id)
            if all(r.id != request_id for r in found):
                raise NotFound(f"input request {request_id} not found in run {run_id}")
            await control.answer_input_request(conn, db, request_id, response,
                                                 action.user.principal.user_id)
    except ValidationFailed as exc:
        context = await _load(request, action.user, run_ref)
        return await page(request, action.user, "run.html", status=422,
                          title=f"Run {run_id.hex[:8]}", **context,
                          answer_errors={str(request_id): exc.detail},
                          answer_values={str(request_id): action.form.get("response", "")})
    return http.redirect(request, f"/runs/{run_id}?notice=answered")
