"""`agentplane worker`, `agentplane jobs ...`, `agentplane dlq ...`, `agentplane schedules
...`: thin over the Python API.

Handler modules for `worker` come from `--import module` (repeatable) or the
comma-separated AGENTPLANE_WORKER_IMPORTS; each registers its handlers with
`@agentplane.queue.handler("type")` when imported.

Past 400 lines by a little: the four command groups share the queue they run against
(the database's, or a server's over --url: RemoteQueue) and the tenant options.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

import typer
from rich.table import Table

from agentplane import ids
from agentplane.errors import ValidationFailed
from agentplane.queue.models import DeadLetter, Job, Page, Priority, Schedule
from agentplane.terminal import console

jobs_app = typer.Typer(help="Inspect and manage jobs on the queue.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: jobs that failed for good.", no_args_is_help=True)
schedules_app = typer.Typer(help="Cron schedules that enqueue jobs.", no_args_is_help=True)
out = console()

TenantOpt = Annotated[str | None, typer.Option(
    "--tenant", envvar="AGENTPLANE_TENANT",
    help="Only this tenant's (slug or id; default: $AGENTPLANE_TENANT, else every tenant's).")]
TenantOne = Annotated[str | None, typer.Option(
    "--tenant", envvar="AGENTPLANE_TENANT",
    help="The tenant: its slug or id (default: $AGENTPLANE_TENANT).")]


async def _tenant_id(q: Any, ref: str | None, *, required: bool = False) -> Any:
    """The tenant a --tenant names (None: every tenant, where that is allowed; over --url
    the key's tenant)."""
    if q.db is None or (ref is None and not required):
        return None
    from agentplane.tenancy.tenants import resolve_tenant_admin

    return await resolve_tenant_admin(q.db, ref)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
JobRef = Annotated[str, typer.Argument(help="The job's id (or a unique start of it).")]


def register(app: typer.Typer) -> None:
    app.command("worker")(worker)
    app.add_typer(jobs_app, name="jobs")
    app.add_typer(dlq_app, name="dlq")
    app.add_typer(schedules_app, name="schedules")


class RemoteQueue:
    """What the job commands call on a JobQueue, over a shared server's API (--url): the
    key's tenant's jobs, as an admin of it sees them."""

    db = None

    def __init__(self, api: Any) -> None:
        self.api = api

    async def list(self, *, tenant_id: Any = None, status: Any = None, type_: Any = None,
                   queue: Any = None, limit: int = 50, cursor: Any = None,
                   id_prefix: str | None = None) -> Page[Job]:
        return Page[Job].model_validate(await self.api.get(
            "/v1/jobs", status=status, type=type_, queue=queue, limit=limit, cursor=cursor,
            id_prefix=id_prefix))

    async def get(self, job_id: str) -> Job:
        return Job.model_validate(await self.api.get(f"/v1/jobs/{job_id}"))

    async def cancel(self, job_id: str) -> Job:
        return Job.model_validate(await self.api.send("POST", f"/v1/jobs/{job_id}/cancel"))

    async def retry(self, job_id: str) -> Job:
        return Job.model_validate(await self.api.send("POST", f"/v1/jobs/{job_id}/retry"))

    async def dead_letters(self, *, tenant_id: Any = None, type_: Any = None, limit: int = 50,
                           cursor: Any = None, id_prefix: str | None = None) -> Page[DeadLetter]:
        return Page[DeadLetter].model_validate(await self.api.get(
            "/v1/dead-letters", type=type_, limit=limit, cursor=cursor, id_prefix=id_prefix))

    async def requeue(self, dead_letter_id: str) -> Any:
        made = await self.api.send("POST", f"/v1/dead-letters/{dead_letter_id}/requeue")
        return made["id"]

    async def pause(self, queue: str, type_: str | None) -> int:
        path = f"/v1/queues/{queue}/pause" + (f"?type={type_}" if type_ else "")
        return (await self.api.send("POST", path))["jobs"]

    async def resume(self, queue: str, type_: str | None) -> int:
        path = f"/v1/queues/{queue}/resume" + (f"?type={type_}" if type_ else "")
        return (await self.api.send("POST", path))["jobs"]


async def _job_id(q: Any, ref: str) -> str:
    """A job's whole id from its id or a unique start of it, on either queue."""
    async def starting(prefix: str) -> list[str]:
        return [str(j.id) for j in (await q.list(limit=2, id_prefix=prefix)).items]

    return await ids.resolve(ref, "job", starting)


async def _dead_letter_id(q: Any, ref: str) -> str:
    async def starting(prefix: str) -> list[str]:
        return [str(d.id) for d in (await q.dead_letters(limit=2, id_prefix=prefix)).items]

    return await ids.resolve(ref, "dead letter", starting)


def _run(fn: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run fn(queue) with the database open (the embedded server is started if needed),
    or with --url, over that server's API."""
    from agentplane import client

    if client.remote():
        return client.call(None, lambda api: fn(RemoteQueue(api)))
    from agentplane.config import get_settings
    from agentplane.db.pool import Database
    from agentplane.db.setup import database
    from agentplane.queue.service import JobQueue

    conf = get_settings()

    async def main(endpoints) -> Any:
        db = Database(conf, endpoints)
        await db.open()
        try:
            return await fn(JobQueue(db))
        finally:
            await db.close()

    with database(conf) as endpoints:
        return asyncio.run(main(endpoints))


def worker(
    concurrency: Annotated[int, typer.Option(min=1, max=10_000, help="Jobs run at once.")] = 10,
    queue: Annotated[list[str] | None, typer.Option("--queue", "-q",
                                                    help="Queue to take jobs from (repeatable).")]
    = None,
    imports: Annotated[list[str] | None, typer.Option(
        "--import", envvar="AGENTPLANE_WORKER_IMPORTS",
        help="Module with handlers to import (repeatable; env: comma-separated).")] = None,
    lease: Annotated[float, typer.Option(min=0.5, help="Seconds a claim lasts unrenewed.")] = 30.0,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between polls.")] = 1.0,
    shutdown_grace: Annotated[float, typer.Option(
        min=0, help="Seconds in-flight jobs get to finish on SIGTERM.")] = 30.0,
    schedules: Annotated[bool, typer.Option(help="Fire due schedules.")] = True,
) -> None:
    """Run a worker until SIGTERM or SIGINT: finishes in-flight jobs, hands back the rest."""
    from agentplane import logs
    from agentplane.config import get_settings
    from agentplane.db.setup import database
    from agentplane.queue.registry import import_modules
    from agentplane.queue.worker import Worker, WorkerOptions

    conf = get_settings()
    logs.configure(conf.log_level, conf.log_format)
    names = [n for item in (imports or []) for n in item.split(",")]
    import_modules(names)
    options = WorkerOptions(
        queues=tuple(queue or ["default"]), concurrency=concurrency, lease=lease,
        poll_interval=poll_interval, shutdown_grace=shutdown_grace, schedules=schedules,
    )

    async def main(conninfo: str) -> None:
        w = Worker(conninfo, options)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, w.stop)
        await w.run()

    with database(conf) as endpoints:
        asyncio.run(main(endpoints.app))


# -- jobs ----------------------------------------------------------------------------


def _jobs_table(jobs: list[Job]) -> Table:
    table = Table("id", "tenant", "type", "queue", "status", "priority", "attempts", "created")
    for j in jobs:
        table.add_row(str(j.id), str(j.tenant_id)[:8], j.type, j.queue, j.status.value,
                      j.priority.value, f"{j.attempts}/{j.max_attempts}",
                      j.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    return table


def _print(value: Any, as_json: bool, table: Callable[[], Table]) -> None:
    if as_json:
        out.print_json(json.dumps(value, default=str))
    else:
        out.print(table())


@jobs_app.command("list")
def jobs_list(
    tenant: TenantOpt = None,
    status: Annotated[str | None, typer.Option(help="Only jobs in this status.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only jobs of this type.")] = None,
    queue: Annotated[str | None, typer.Option(help="Only jobs of this queue.")] = None,
    limit: Annotated[int, typer.Option(help="Jobs per page (1-1000).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Next page: the cursor printed.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    async def listed(q: Any) -> Any:
        return await q.list(tenant_id=await _tenant_id(q, tenant), status=status, type_=type_,
                            queue=queue, limit=limit, cursor=cursor)

    page = _run(listed)
    _print(page.model_dump(mode="json"), as_json, lambda: _jobs_table(page.items))
    if page.next_cursor and not as_json:
        out.print(f"next page: --cursor {page.next_cursor}", soft_wrap=True)


@jobs_app.command("show")
def jobs_show(job_id: JobRef, as_json: JsonOpt = False) -> None:
    """One job with its result, errors and attempts."""
    async def shown(q: Any) -> Job:
        return await q.get(await _job_id(q, job_id))

    job = _run(shown)
    data = job.model_dump(mode="json")

    def table() -> Table:
        t = Table("field", "value")
        for key, value in data.items():
            t.add_row(key, json.dumps(value) if isinstance(value, dict | list) else str(value))
        return t

    _print(data, as_json, table)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobRef) -> None:
    """Cancel a waiting job, or ask a running one to stop."""
    async def cancelled(q: Any) -> Job:
        return await q.cancel(await _job_id(q, job_id))

    job = _run(cancelled)
    what = "cancel requested" if job.status == "running" else "cancelled"
    out.print(f"job {job.id} {what}")


@jobs_app.command("retry")
def jobs_retry(job_id: JobRef) -> None:
    """Queue a dead-lettered, cancelled, failed or stuck job again, now, with fresh attempts."""
    async def retried(q: Any) -> Job:
        return await q.retry(await _job_id(q, job_id))

    job = _run(retried)
    out.print(f"job {job.id} queued again (attempt {job.attempts + 1} of {job.max_attempts})")


@jobs_app.command("pause")
def jobs_pause(
    queue: Annotated[str, typer.Option(help="Queue to pause.")] = "default",
    type_: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
) -> None:
    """Pause a queue, or one type in it: its waiting jobs are not claimed until resumed."""
    n = _run(lambda q: q.pause(queue, type_))
    out.print(f"paused {queue}{'/' + type_ if type_ else ''}: {n} waiting jobs held")


@jobs_app.command("resume")
def jobs_resume(
    queue: Annotated[str, typer.Option(help="Queue to resume.")] = "default",
    type_: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
) -> None:
    """Resume a paused queue or type."""
    n = _run(lambda q: q.resume(queue, type_))
    out.print(f"resumed {queue}{'/' + type_ if type_ else ''}: {n} jobs released")


# -- dead letters ------------------------------------------------------------------------


@dlq_app.command("list")
def dlq_list(
    tenant: TenantOpt = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only this job type.")] = None,
    limit: Annotated[int, typer.Option(help="Rows per page (1-1000).")] = 50,
    cursor: Annotated[str | None, typer.Option(help="Next page: the cursor printed.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List dead letters, newest first."""
    async def listed(q: Any) -> Any:
        return await q.dead_letters(tenant_id=await _tenant_id(q, tenant), type_=type_,
                                    limit=limit, cursor=cursor)

    page = _run(listed)

    def table() -> Table:
        t = Table("id", "job", "type", "attempts", "error", "moved", "requeued as")
        for d in page.items:
            t.add_row(str(d.id), str(d.job_id), d.type, str(d.attempts), d.error[:80],
                      d.moved_at.strftime("%Y-%m-%d %H:%M:%S"), str(d.requeued_job_id or ""))
        return t

    _print(page.model_dump(mode="json"), as_json, table)
    if page.next_cursor and not as_json:
        out.print(f"next page: --cursor {page.next_cursor}", soft_wrap=True)


@dlq_app.command("requeue")
def dlq_requeue(
    dead_letter_id: Annotated[str, typer.Argument(
        help="The dead letter's id (or a unique start of it).")],
) -> None:
    """Enqueue a fresh job from a dead letter."""
    async def requeued(q: Any) -> Any:
        return await q.requeue(await _dead_letter_id(q, dead_letter_id))

    job_id = _run(requeued)
    out.print(f"requeued as job {job_id}")


# -- schedules ---------------------------------------------------------------------------


@schedules_app.command("add")
def schedules_add(
    name: Annotated[str, typer.Option(help="What the schedule is for.")],
    cron: Annotated[str, typer.Option(help="Five fields, e.g. '0 9 * * 1-5'.")],
    type_: Annotated[str, typer.Option("--type", help="The job type to enqueue.")],
    timezone: Annotated[str, typer.Option(help="The zone the cron is read in.")] = "UTC",
    payload: Annotated[str, typer.Option(help="The jobs' payload, as JSON.")] = "{}",
    queue: Annotated[str, typer.Option(help="The queue of the jobs.")] = "default",
    priority: Annotated[Priority, typer.Option(help="The jobs' priority.")] = Priority.normal,
    max_attempts: Annotated[int, typer.Option(help="Attempts per job.")] = 3,
    allow_unknown: Annotated[bool, typer.Option(
        help="Accept a type no worker has a handler for yet.")] = False,
    tenant: TenantOne = None,
) -> None:
    """Enqueue a job of TYPE at each tick of CRON, once however many workers run."""
    from agentplane.queue import schedules

    try:
        body = json.loads(payload)
    except ValueError as exc:
        raise ValidationFailed(f"--payload is not JSON: {exc}") from None
    spec = {"name": name, "cron": cron, "timezone": timezone, "type": type_, "payload": body,
            "queue": queue, "priority": priority.value, "max_attempts": max_attempts}

    async def add(q: Any) -> Any:
        if q.db is None:  # over --url: for the key's tenant
            body = {**spec, "allow_unknown": allow_unknown}
            made = await q.api.send("POST", "/v1/schedules", body)
            return Schedule.model_validate(made)
        tenant_id = await _tenant_id(q, tenant, required=True)
        if not allow_unknown:
            await q.check_known({type_})
        return await schedules.create(q.db, spec, tenant_id=tenant_id)

    s = _run(add)
    out.print(f"schedule {s.id}: {s.cron} ({s.timezone}), "
              f"next at {s.next_run_at:%Y-%m-%d %H:%M:%S %Z}")


@schedules_app.command("list")
def schedules_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Schedules by name, with their next tick and last job."""
    from agentplane.queue import schedules

    async def listed(q: Any) -> Any:
        if q.db is None:  # over --url: the key's tenant's schedules
            return [Schedule.model_validate(x) for x in await q.api.get("/v1/schedules")]
        return await schedules.list_(q.db, tenant_id=await _tenant_id(q, tenant))

    found = _run(listed)

    def table() -> Table:
        t = Table("id", "tenant", "name", "cron", "zone", "type", "next", "last job")
        for s in found:
            t.add_row(str(s.id), str(s.tenant_id)[:8], s.name, s.cron, s.timezone, s.type,
                      s.next_run_at.strftime("%Y-%m-%d %H:%M:%S"), str(s.last_job_id or ""))
        return t

    _print([s.model_dump(mode="json") for s in found], as_json, table)


@schedules_app.command("delete")
def schedules_delete(
    schedule_id: Annotated[str, typer.Argument(
        help="The schedule's id (or a unique start of it).")],
    tenant: TenantOne = None,
) -> None:
    """Delete a schedule: no tick enqueues from then on."""
    from agentplane.queue import schedules

    async def delete(q: Any) -> str:
        if q.db is None:  # over --url: the key's tenant's
            ident = await q.api.full_id("/v1/schedules", schedule_id, "schedule")
            await q.api.send("DELETE", f"/v1/schedules/{ident}")
            return ident
        tenant_id = await _tenant_id(q, tenant, required=True)

        async def starting(prefix: str) -> list[str]:
            found = await schedules.list_(q.db, tenant_id=tenant_id, id_prefix=prefix)
            return [str(x.id) for x in found]

        ident = await ids.resolve(schedule_id, "schedule", starting)
        await schedules.delete(q.db, UUID(ident), tenant_id=tenant_id)
        return ident

    out.print(f"schedule {_run(delete)} deleted")
