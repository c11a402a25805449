"""The queue handler that runs a task. `agentplane worker` imports this module (or any
module importing it) to execute runs; in-process callers hand it their database."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentplane import metrics
from agentplane.config import Settings, get_settings
from agentplane.db.pool import Database
from agentplane.queue import JobContext, registry
from agentplane.runtime.executor import Executor
from agentplane.workflows.jobs import JOB_TYPE

_executor: Executor | None = None


def use(db: Database, settings: Settings) -> Executor:
    """Run tasks on this process's database (the API, the CLI, tests)."""
    global _executor
    _executor = Executor(db, settings)
    return _executor


async def _get() -> Executor:
    global _executor
    if _executor is None:
        from agentplane.db import endpoints as ep

        settings = get_settings()
        db = Database(settings, ep.resolve(settings))
        await db.open()
        _executor = Executor(db, settings)
    return _executor


@registry.handler(JOB_TYPE)
async def run_task(ctx: JobContext) -> dict[str, Any]:
    payload = ctx.payload
    executor = await _get()
    outcome = await executor.run_task(
        ctx.tenant_id,
        UUID(payload["run_id"]),
        UUID(payload["task_id"]),
        int(payload["dispatch"]),
        stop=ctx.wait_cancelled,
    )
    metrics.task_outcome(outcome)
    if outcome == "stopped":
        ctx.raise_if_cancelled()  # the job ends cancelled, not completed
    return {"outcome": outcome}
