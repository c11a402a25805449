"""HTTP: a tenant's own jobs and dead letters, cursor-paginated, pausing its own queues,
and its cron schedules.

Who may do what (the dashboard's queue page checks the same names): every role with
`jobs:read` reads; a developer (`jobs:write`) acts on jobs that exist: cancel, retry,
requeue a dead letter, pause and resume; new work of any type (enqueue, schedules) is
for owners and admins, since a job's payload goes to its handler unchecked."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict

from agentplane.auth import scopes as sc
from agentplane.auth.deps import DB, IdPrefix, Principal, requires
from agentplane.queue import schedules
from agentplane.queue.models import (
    DeadLetter,
    Job,
    Page,
    Pause,
    Priority,
    Schedule,
    ScheduleSpec,
)
from agentplane.queue.service import JobQueue

router = APIRouter(prefix="/v1", tags=["jobs"])
READ, ACT = "jobs:read", "jobs:write"
CREATORS = sc.MANAGERS
Reader = Annotated[Principal, Depends(requires(READ))]
Actor = Annotated[Principal, Depends(requires(ACT))]
Writer = Annotated[Principal, Depends(requires(ACT, roles=CREATORS))]


class EnqueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: str
    payload: Any = None
    queue: str = "default"
    priority: Priority = Priority.normal
    delay: float = 0
    max_attempts: int = 3
    idempotency_key: str | None = None
    allow_unknown: bool = False


class Enqueued(BaseModel):
    id: UUID


@router.post("/jobs", status_code=201)
async def enqueue(body: EnqueueIn, principal: Writer, db: DB) -> Enqueued:
    options = body.model_dump(exclude={"type", "payload", "allow_unknown"})
    job_id = await JobQueue(db).enqueue(body.type, body.payload, tenant_id=principal.tenant_id,
                                        allow_unknown=body.allow_unknown, **options)
    return Enqueued(id=job_id)


@router.get("/jobs")
async def list_jobs(
    principal: Reader,
    db: DB,
    status: str | None = None,
    type: str | None = None,
    queue: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
    id_prefix: IdPrefix = None,
) -> Page[Job]:
    return await JobQueue(db).list(tenant_id=principal.tenant_id, status=status, type_=type,
                                   queue=queue, limit=limit, cursor=cursor, id_prefix=id_prefix)


@router.get("/jobs/{job_id}")
async def get_job(job_id: UUID, principal: Reader, db: DB) -> Job:
    return await JobQueue(db).get(job_id, tenant_id=principal.tenant_id)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: UUID, principal: Actor, db: DB) -> Job:
    return await JobQueue(db).cancel(job_id, tenant_id=principal.tenant_id)


@router.post("/jobs/{job_id}/retry")
async def retry_job(job_id: UUID, principal: Actor, db: DB) -> Job:
    return await JobQueue(db).retry(job_id, tenant_id=principal.tenant_id)


@router.get("/dead-letters")
async def list_dead_letters(
    principal: Reader,
    db: DB,
    type: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    cursor: str | None = None,
    id_prefix: IdPrefix = None,
) -> Page[DeadLetter]:
    return await JobQueue(db).dead_letters(tenant_id=principal.tenant_id, type_=type,
                                           limit=limit, cursor=cursor, id_prefix=id_prefix)


@router.post("/dead-letters/{dead_letter_id}/requeue", status_code=201)
async def requeue(dead_letter_id: UUID, principal: Actor, db: DB) -> Enqueued:
    job_id = await JobQueue(db).requeue(dead_letter_id, tenant_id=principal.tenant_id)
    return Enqueued(id=job_id)


class Paused(BaseModel):
    queue: str
    type: str | None
    jobs: int
    """Waiting jobs the call held (pause) or released (resume)."""


@router.get("/queue-pauses")
async def list_pauses(principal: Reader, db: DB) -> list[Pause]:
    """The pauses holding this tenant's jobs: its own, and an operator's for every
    tenant (`everyone`), which only the operator lifts."""
    return await JobQueue(db).pauses(tenant_id=principal.tenant_id)


@router.post("/queues/{queue}/pause")
async def pause_queue(queue: str, principal: Actor, db: DB, type: str | None = None) -> Paused:
    """Pause a queue, or one job type in it, for this tenant's jobs only."""
    n = await JobQueue(db).pause(queue, type, tenant_id=principal.tenant_id)
    return Paused(queue=queue, type=type, jobs=n)


@router.post("/queues/{queue}/resume")
async def resume_queue(queue: str, principal: Actor, db: DB, type: str | None = None) -> Paused:
    """Lift this tenant's pause of a queue (or type); an operator's pause stays."""
    n = await JobQueue(db).resume(queue, type, tenant_id=principal.tenant_id)
    return Paused(queue=queue, type=type, jobs=n)


class ScheduleIn(ScheduleSpec):
    allow_unknown: bool = False
    """Accept a job type no worker has a handler for yet."""


@router.get("/schedules")
async def list_schedules(principal: Reader, db: DB, id_prefix: IdPrefix = None) -> list[Schedule]:
    return await schedules.list_(db, tenant_id=principal.tenant_id, id_prefix=id_prefix)


@router.post("/schedules", status_code=201)
async def create_schedule(body: ScheduleIn, principal: Writer, db: DB) -> Schedule:
    """A cron expression (in a time zone) that enqueues a job of `type` at each tick, once
    however many workers run."""
    if not body.allow_unknown:
        await JobQueue(db).check_known({body.type})
    spec = ScheduleSpec.model_validate(body.model_dump(exclude={"allow_unknown"}))
    return await schedules.create(db, spec, tenant_id=principal.tenant_id)


@router.delete("/schedules/{schedule_id}", status_code=204)
async def delete_schedule(schedule_id: UUID, principal: Writer, db: DB) -> Response:
    await schedules.delete(db, schedule_id, tenant_id=principal.tenant_id)
    return Response(status_code=204)
