"""Running runs from the command line: an in-process worker, and a live view of the
run's tree (agentplane.workflows.render) while it executes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.workflows.models import TERMINAL, RunTree
from agentplane.workflows.render import render


@contextlib.asynccontextmanager
async def in_process_worker(
    db: Database, settings: Settings, concurrency: int = 8
) -> AsyncIterator[None]:
    from agentplane.queue.registry import registry
    from agentplane.queue.worker import Worker, WorkerOptions
    from agentplane.runtime import handler

    handler.use(db, settings)
    worker = Worker(
        db.endpoints.app,
        WorkerOptions(
            poll_interval=0.05,
            concurrency=concurrency,
            schedules=False,
            worker_id=f"cli-{uuid.uuid4().hex[:8]}",
        ),
        registry,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def follow(
    api: Any,
    run_id: str,
    on_update: Callable[[RunTree], None],
    interval: float = 0.1,
    timeout: float | None = None,  # noqa: ASYNC109
) -> RunTree:
    """Poll the run's tree until it is finished (or waits on a person)."""
    loop = asyncio.get_running_loop()
    end = None if timeout is None else loop.time() + timeout
    while True:
        tree = RunTree.model_validate(await api.get(f"/v1/runs/{run_id}/tree"))
        on_update(tree)
        status = tree.run.status
        if status in TERMINAL or (status == "paused" and tree.run.pending_input_requests):
            return tree
        if end is not None and loop.time() > end:
            return tree
        await asyncio.sleep(interval)


async def run_and_show(
    api: Any, body: dict[str, Any], console: Any, *, wait: bool = True, detail: bool = False
) -> RunTree:
    """Start a run through the API and show its tree live until it ends; locally its
    tasks run in this process, on a shared server its workers run them."""
    from rich.live import Live

    created = await api.send("POST", "/v1/runs", body)
    if not wait:
        return RunTree.model_validate(await api.get(f"/v1/runs/{created['id']}/tree"))
    here = contextlib.nullcontext() if api.remote else in_process_worker(api.db, api.settings)
    async with here:
        with Live(console=console, refresh_per_second=12, transient=False) as live:
            tree = await follow(api, created["id"], lambda t: live.update(render(t)))
            live.update(render(tree, detail=detail))
        console.print()
    return tree
