"""A run's ready tasks become queue jobs, enqueued on the caller's transaction so a job
exists exactly when the state that made its task ready commits.

Workflows' controls (start, resume, retry, an answer) and the runtime's executor both
enqueue them; the runtime's handler (agentplane.runtime.handler) runs them."""

from __future__ import annotations

from functools import cache
from typing import Any
from uuid import UUID

from agentplane.db.pool import Connection, Database
from agentplane.queue import JobQueue
from agentplane.queue.models import JobSpec
from agentplane.queue.service import job_columns, make_spec

JOB_TYPE = "runtime.task"
QUEUE = "default"


def _spec(payload: dict[str, Any], delay: float = 0) -> JobSpec:
    return make_spec(JOB_TYPE, payload, queue=QUEUE, delay=delay, max_attempts=5)


@cache
def task_job() -> dict[str, Any]:
    """The columns of a task's job but its id and payload, for runtime_complete
    (runtime/sql/batches.sql), which queues the tasks a batch releases."""
    columns = job_columns(_spec({}))
    del columns["payload"]
    return columns


async def enqueue_tasks(
    conn: Connection,
    db: Database,
    tenant_id: UUID,
    tasks: list[dict[str, Any]],
    *,
    delay: float = 0,
) -> None:
    """One job per task; each carries the task's dispatch number (its fencing token)."""
    if not tasks:
        return
    specs = [
        _spec({"task_id": str(t["id"]), "run_id": str(t["run_id"]), "dispatch": t["dispatch"]},
              delay)
        for t in tasks
    ]
    # agentplane's own job type: every worker imports its handler (the queue's
    # BUILTIN_HANDLERS), so there is no registered handler to look for here.
    await JobQueue(db).enqueue_many(specs, tenant_id=tenant_id, conn=conn, allow_unknown=True)
