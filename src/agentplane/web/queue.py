"""The queue: the tenant's jobs by queue and status, dead letters (retry the job, or
requeue a fresh one), pausing a queue, and the cron schedules. Roles as in the API
(queue/api.py's READ, ACT and CREATORS): viewers read, developers act on jobs, owners
and admins delete schedules."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from agentplane.errors import ValidationFailed
from agentplane.queue import schedules
from agentplane.queue.api import ACT, CREATORS, READ
from agentplane.queue.models import Status
from agentplane.queue.service import JobQueue
from agentplane.web import http
from agentplane.web.http import Posted, WebRoute, WebUser
from agentplane.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
Action = Annotated[Posted, Depends(http.posted)]
PAGE = 50


@router.get("/queue")
async def queue(request: Request, user: User) -> HTMLResponse:
    return await _page(request, user)


async def _page(request: Request, user: WebUser, *, pause: dict[str, str] | None = None,
                pause_problem: str | None = None) -> HTMLResponse:
    """The page; after a refused pause, with the form's values and its problem."""
    http.need(user, READ)
    q = request.query_params
    filters = {k: q.get(k, "").strip()[:100] for k in ("status", "queue", "type")}
    problems: dict[str, str] = {"pause": pause_problem} if pause_problem else {}
    if filters["status"] and filters["status"] not in Status.__members__:
        problems["status"] = "not a job status"
    db, jobs_ = http.db_of(request), JobQueue(http.db_of(request))
    jobs = letters = None
    if "status" not in problems:
        try:
            jobs = await jobs_.list(
                tenant_id=user.tenant_id, status=filters["status"] or None,
                type_=filters["type"] or None, queue=filters["queue"] or None, limit=PAGE,
                cursor=(q.get("cursor") or None) and q.get("cursor", "")[:200])
        except ValidationFailed as exc:
            problems["cursor"] = exc.detail
    if "status" not in problems and "cursor" not in problems:
        letters = await jobs_.dead_letters(
            tenant_id=user.tenant_id, limit=PAGE,
            cursor=(q.get("dl_cursor") or None) and q.get("dl_cursor", "")[:200])
    found = await schedules.list_(db, tenant_id=user.tenant_id)
    pauses = await jobs_.pauses(tenant_id=user.tenant_id)
    return await page(request, user, "queue.html", title="Queue",
                      status=422 if problems else 200, jobs=jobs, letters=letters,
                      schedules=found, pauses=pauses, pause=pause or {}, filters=filters,
                      problems=problems, query=urlencode({k: v for k, v in filters.items() if v}),
                      statuses=list(Status.__members__), acts=user.can(ACT),
                      creates=user.can(ACT) and user.role in CREATORS)


def _back(request: Request, notice: str) -> Response:
    return http.redirect(request, f"/queue?notice={notice}")


@router.post("/queue/jobs/{ref}/retry")
async def retry_job(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, ACT)
    await JobQueue(http.db_of(request)).retry(http.parse_uuid(ref, "job"),
                                              tenant_id=action.user.tenant_id)
    return _back(request, "job-retried")


@router.post("/queue/jobs/{ref}/cancel")
async def cancel_job(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, ACT)
    await JobQueue(http.db_of(request)).cancel(http.parse_uuid(ref, "job"),
                                               tenant_id=action.user.tenant_id)
    return _back(request, "job-cancelled")


@router.post("/queue/dead-letters/{ref}/requeue")
async def requeue(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, ACT)
    await JobQueue(http.db_of(request)).requeue(http.parse_uuid(ref, "dead letter"),
                                                tenant_id=action.user.tenant_id)
    return _back(request, "requeued")


@router.post("/queue/pause")
async def pause(request: Request, action: Action) -> Response:
    """Pause, or resume (the form's `resume`), through the API's service; a bad queue or
    type name shows the page again with the problem, nothing paused."""
    http.need(action.user, ACT)
    form = {"queue": action.form.text("queue")[:300] or "default",
            "type": action.form.text("type")[:300]}
    jobs = JobQueue(http.db_of(request))
    resume = bool(action.form.get("resume"))
    try:
        if resume:
            await jobs.resume(form["queue"], form["type"] or None,
                              tenant_id=action.user.tenant_id)
        else:
            await jobs.pause(form["queue"], form["type"] or None,
                             tenant_id=action.user.tenant_id)
    except ValidationFailed as exc:
        return await _page(request, action.user, pause=form, pause_problem=exc.detail)
    return _back(request, "queue-resumed" if resume else "queue-paused")


@router.post("/queue/schedules/{ref}/delete")
async def delete_schedule(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, ACT, roles=CREATORS)
    await schedules.delete(http.db_of(request), http.parse_uuid(ref, "schedule"),
                           tenant_id=action.user.tenant_id)
    return _back(request, "schedule-deleted")
