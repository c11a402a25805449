"""Control of a run (cancel, pause, resume, retry a task), its input requests and its
run data: each in the caller's transaction, the run locked first."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import jsonschema

from agentplane import ids
from agentplane.db.pool import Connection, Database
from agentplane.errors import Conflict, NotFound, ValidationFailed
from agentplane.events.emit import emit, event
from agentplane.queue.service import ask_to_stop
from agentplane.workflows import store
from agentplane.workflows.jobs import JOB_TYPE, enqueue_tasks
from agentplane.workflows.models import (
    TERMINAL,
    InputRequest,
    Run,
)
from agentplane.workflows.runs import get_run


async def _locked(conn: Connection, run_id: UUID) -> dict[str, Any]:
    row = await store.get_run(conn, run_id, lock=True)
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return row


async def cancel_run(conn: Connection, run_id: UUID, reason: str = "cancelled") -> Run:
    run = await _locked(conn, run_id)
    if run["status"] in TERMINAL:
        raise Conflict(f"run {run_id} is already {run['status']}")
    cancelled = await store.cancel_open_tasks(
        conn, run_id, reason, ("pending", "queued", "running", "waiting")
    )
    # The workers running its tasks stop them now, cancelling their provider calls.
    await ask_to_stop(conn, run["tenant_id"], JOB_TYPE, {"run_id": str(run_id)})
    await store.cancel_input_requests(conn, run_id)
    await store.set_run_status(conn, run_id, "cancelled", error=reason)
    await emit(
        conn,
        run["tenant_id"],
        run_id,
        [event("run.cancelled", message=reason, tasks_cancelled=len(cancelled))],
    )
    return await get_run(conn, run_id)


async def pause_run(conn: Connection, run_id: UUID) -> Run:
    run = await _locked(conn, run_id)
    if run["status"] not in ("pending", "running"):
        raise Conflict(f"run {run_id} is {run['status']}; only a pending or running run pauses")
    await store.set_run_status(conn, run_id, "paused", paused_by="user")
    await emit(conn, run["tenant_id"], run_id, [event("run.paused", message="paused by a user")])
    return await get_run(conn, run_id)


async def resume_run(conn: Connection, db: Database, run_id: UUID) -> Run:
    """Queued tasks whose jobs were skipped while paused get fresh jobs."""
    run = await _locked(conn, run_id)
    if run["status"] != "paused" or run["metadata"].get("paused_by") != "user":
        raise Conflict(f"run {run_id} is not paused by a user (it is {run['status']})")
    status = "running" if run["started_at"] else "pending"
    await store.set_run_status(conn, run_id, status)
    ready = await store.dispatch_tasks(conn, await store.queued_tasks(conn, run_id))
    for t in ready:
        t["run_id"] = run_id
    await enqueue_tasks(conn, db, run["tenant_id"], ready)
    await emit(conn, run["tenant_id"], run_id, [event("run.resumed", tasks_queued=len(ready))])
    return await get_run(conn, run_id)


async def retry_task(conn: Connection, db: Database, run_id: UUID, task_id: UUID) -> Run:
    """A failed task runs again; the run, failed because of it, runs on."""
    run = await _locked(conn, run_id)
    task = await store.get_task(conn, task_id, lock=True)
    if task is None or task["run_id"] != run_id:
        raise NotFound(f"task {task_id} not found in run {run_id}")
    if task["status"] != "failed":
        raise Conflict(f"task {task['node']} is {task['status']}; only a failed task is retried")
    if run["status"] == "cancelled":
        raise Conflict(f"run {run_id} is cancelled")
    await store.reopen_failed_task(conn, run_id, task_id)
    ready = await store.dispatch_tasks(conn, [task_id, *await store.reopen_cancelled(conn, run_id)])
    for t in ready:
        t["run_id"] = run_id
    reopened = []
    if run["status"] == "failed":
        await store.set_run_status(conn, run_id, "running")
        # The one event that opens a run's closed log again (see events_append,
        # events/sql/functions.sql).
        reopened = [event("run.resumed", message="a failed task is retried", by="user")]
    await enqueue_tasks(conn, db, run["tenant_id"], ready)
    await emit(
        conn,
        run["tenant_id"],
        run_id,
        [
            *reopened,
            event("task.retrying", task_id=task_id, message="retried by a user", by="user"),
        ],
    )
    return await get_run(conn, run_id)


# -- input requests ----------------------------------------------------------------------------


async def list_input_requests(
    conn: Connection, run_id: UUID | None = None, status: str | None = None,
    id_prefix: str | None = None,
) -> list[InputRequest]:
    if run_id is not None:
        await get_run(conn, run_id)
    id_range = ids.optional_bounds(id_prefix, "input request")
    return [
        InputRequest.model_validate(r)
        for r in await store.list_input_requests(conn, run_id, status, id_range)
    ]


async def answer_input_request(
    conn: Connection, db: Database, request_id: UUID, response: Any, user_id: UUID | None
) -> InputRequest:
    """The answer must match the request's schema; then the task runs again from where
    it asked, and the run, paused while waiting, runs on."""
    req = await store.get_input_request(conn, request_id, lock=True)
    if req is None:
        raise NotFound(f"input request {request_id} not found")
    if req["status"] != "pending":
        raise Conflict(f"input request {request_id} is {req['status']}")
    try:
        jsonschema.validate(response, req["schema"])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "response"
        raise ValidationFailed(
            f"the answer does not match the schema at {where}: {exc.message}"
        ) from None
    except jsonschema.SchemaError as exc:
        raise Conflict(f"the request's schema is invalid: {exc.message}") from None
    run = await _locked(conn, req["run_id"])
    answered = await store.answer_input_request(conn, request_id, response, user_id)
    events = [event("input.answered", task_id=req["task_id"], request_id=request_id)]
    if (
        await store.pending_input_count(conn, req["run_id"]) == 0
        and run["status"] == "paused"
        and run["metadata"].get("paused_by") == "input"
    ):
        await store.set_run_status(conn, req["run_id"], "running")
        events.append(event("run.resumed", message="input received"))
    task = await store.get_task(conn, req["task_id"], lock=True)
    if task["status"] == "waiting":
        ready = await store.dispatch_tasks(conn, [task["id"]])
        await enqueue_tasks(conn, db, run["tenant_id"], ready)
    await emit(conn, run["tenant_id"], req["run_id"], events)
    return InputRequest.model_validate(answered)


async def put_run_data(conn: Connection, run_id: UUID, body: Any) -> dict[str, Any]:
    await get_run(conn, run_id)
    return await store.put_run_data(
        conn, {**body.model_dump(), "run_id": run_id, "task_id": None, "agent": None}
    )


async def get_run_data(conn: Connection, run_id: UUID) -> list[dict[str, Any]]:
    await get_run(conn, run_id)
    return await store.get_run_data(conn, run_id)
