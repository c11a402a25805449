"""The queue: the tenant's jobs by queue and status, dead letters (retry the job, or
requeue a fresh one), pausing a queue, and the cron schedules. Roles as in the API
(queue/api.py's READ, ACT and CREATORS): viewers read, developers act on jobs, owners
and admins delete schedules."""

from __future__ import annotations

from typing import Annotated

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
    http.need(user, READ)
    q = request.query_params
    filters = {k: q.get(k, "").strip()[:100] for k in ("status", "queue", "type")}
    problems: dict[str, str] = {}
    if filters["status"] and filters["status"] not in Status.__members__:
        problems["status"] = "not a job status"
    db = http.db_of(request)
    jobs = letters = None
    if not problems:
        try:
            jobs = await JobQueue(db).list(
                tenant_id=user.tenant_id, status=filters["status"] or None,
                type_=filters["type"] or None, queue=filters["queue"] or None, limit=PAGE,
                cursor=(q.get("cursor") or None) and q.get("cursor", "")[:200])
        except ValidationFailed as exc:
            problems["cursor"] = exc.detail
    if not problems:
        letters = await JobQueue(db).dead_letters(
            tenant_id=user.tenant_id, limit=PAGE,
            cursor=(q.get("dl_cursor") or None) and q.get("dl_cursor", "")[:200])
    found = await schedules.list_(db, tenant_id=user.tenant_id)
    query = "&".join(f"{k}={v}" for k, v in filters.items() if v)
    return await page(request, user, "queue.html", title="Queue",
                      status=422 if problems else 200, jobs=jobs, letters=letters,
                      schedules=found, filters=filters, problems=problems, query=query,
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
    http.need(action.user, ACT)
    name, type_ = action.form.text("queue")[:100] or "default", action.form.text("type")[:200]
    jobs = JobQueue(http.db_of(request))
    if action.form.get("resume"):
        await jobs.resume(name, type_ or None, tenant_id=action.user.tenant_id)
        return _back(request, "queue-resumed")
    await jobs.pause(name, type_ or None, tenant_id=action.user.tenant_id)
    return _back(request, "queue-paused")


@router.post("/queue/schedules/{ref}/delete")
async def delete_schedule(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, ACT, roles=CREATORS)
    await schedules.delete(http.db_of(request), http.parse_uuid(ref, "schedule"),
                           tenant_id=action.user.tenant_id)
    return _back(request, "schedule-deleted")
