"""The worker: an asyncio loop that claims jobs and runs their handlers.

One module past 400 lines on purpose: the loop and its side tasks share the worker's
slots, leases and unwritten results; apart, each would reach into the others' state.

The loop waits on a NOTIFY, a freed slot, the poll interval or stop, whichever
comes first, then claims as many jobs as it has free slots (one statement, SKIP
LOCKED). Side tasks: heartbeats (extend leases, deliver cancel requests, notice
lost leases), the flusher (writes completions in batches: whatever finished
while the previous write was in flight), and maintenance (returns jobs with
expired leases to the queue, fires due schedules). Any database error makes the
failing task back off and retry, so a PostgreSQL restart is survived; results
still to be written stay in memory and are written once the database is back.

The worker connects as the application role and calls SECURITY DEFINER
functions for the cross-tenant work; see agentplane/queue/__init__.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import random
import socket
import traceback
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row, tuple_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agentplane import metrics
from agentplane.errors import AgentplaneError
from agentplane.queue import schedules, store
from agentplane.queue.registry import JobCancelled, JobContext, PermanentError, Registry
from agentplane.queue.registry import registry as default_registry

log = logging.getLogger("agentplane.worker")
CHANNEL = "agentplane_jobs"
RETRYABLE_DB = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout, AgentplaneError)


@dataclass
class WorkerOptions:
    queues: tuple[str, ...] = ("default",)
    concurrency: int = 10
    lease: float = 30.0
    """Seconds a claim lasts without a heartbeat; heartbeats every lease/3."""
    poll_interval: float = 1.0
    shutdown_grace: float = 30.0
    tenant_share: int = 1
    """Jobs a tenant may always take of a claim; the rest is shared among visited tenants."""
    fair_tenants: int = 16
    """Tenants visited per claim (round-robin from a random start)."""
    recover_interval: float = 0.0
    """Seconds between lease recovery runs; 0: lease/2."""
    schedules: bool = True
    worker_id: str = ""


@dataclass
class Running:
    ctx: JobContext
    task: asyncio.Task[None]
    lost: bool = False


class Worker:
    def __init__(
        self,
        conninfo: str,
        options: WorkerOptions | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.conninfo = conninfo
        self.opts = options or WorkerOptions()
        self.registry = registry or default_registry
        self.id = self.opts.worker_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        )
        # Autocommit: each worker statement is its own transaction, so a claim or a
        # batch of completions is one round trip (no BEGIN/COMMIT around it).
        self.pool = AsyncConnectionPool(
            conninfo, min_size=1, max_size=4,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False, timeout=5, name=f"worker-{self.id}",
        )
        self.running: dict[uuid.UUID, Running] = {}
        self.stopping = asyncio.Event()
        self._wakeup = asyncio.Event()
        self._results: list[tuple[JobContext, str, Any, str | None]] = []
        self._write_lock = asyncio.Lock()
        self._to_flush = asyncio.Event()
        self._due = float("inf")
        """Loop time when jobs held back by a limit may run: claim again then."""
        self._full = False
        """The last claim filled every free slot: a finished job should claim again."""
        self.processed = 0

    # -- lifecycle -------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming; in-flight jobs get `shutdown_grace` seconds to finish."""
        self.stopping.set()
        self._wakeup.set()

    async def run(self) -> None:
        if not self.registry.types():
            log.warning("worker has no handlers; jobs it claims will fail permanently")
        await self.pool.open(wait=False)
        # What is loaded by now lives as long as the worker: the collector's full passes
        # need not walk it again and again (a fifth of the worker's CPU went there).
        gc.freeze()
        side = [
            asyncio.create_task(self._listen(), name="listen"),
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._flusher(), name="flusher"),
            asyncio.create_task(self._maintenance(), name="maintenance"),
        ]
        try:
            await self._retrying("register", self._register)
            log.info("worker started", extra={"worker": self.id, "queues": self.opts.queues,
                                              "concurrency": self.opts.concurrency})
            await self._claim_loop()
            await self._drain()
        finally:
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            await self.pool.close()
            log.info("worker stopped", extra={"worker": self.id, "processed": self.processed})

    async def _register(self) -> None:
        async with self.pool.connection() as conn:
            await store.execute(conn, "register_types", names=self.registry.types())

    async def _retrying(self, what: str, fn) -> Any:
        delay = 0.05
        while True:
            try:
                return await fn()
            except RETRYABLE_DB as exc:
                if self.stopping.is_set() and what != "flush":
                    raise
                log.warning("%s failed, retrying in %.2fs: %s", what, delay, _first_line(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    # -- claiming ----------------------------------------------------------------

    async def _claim_loop(self) -> None:
        """Claims when woken: by a NOTIFY (new jobs), by a finished job while the
        worker was full, when jobs a limit held back may run, or by the poll
        interval (jobs that came due, missed notifications). A claim that got fewer
        jobs than it asked for found the queue empty: the next claim waits for one
        of those, not for the next turn."""
        delay = 0.05
        while not self.stopping.is_set():
            self._wakeup.clear()
            free = self.opts.concurrency - len(self.running)
            self._full = free <= 0
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    delay = 0.05
                except RETRYABLE_DB as exc:
                    log.warning("claim failed, retrying in %.2fs: %s", delay, _first_line(exc))
                    await self._sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if claimed == free:
                    self._full = True  # there is probably more: claim again when a slot frees
                    if len(self.running) < self.opts.concurrency:
                        continue
            loop = asyncio.get_running_loop()
            wait = min(self.opts.poll_interval, self._due - loop.time())
            self._due = float("inf")
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wakeup.wait()

    async def _claim(self, n: int) -> int:
        async with self.pool.connection() as conn:
            # Tuples, not dicts: at thousands of jobs a second the row shape shows.
            cur = conn.cursor(row_factory=tuple_row)
            await cur.execute(store.queries()["claim"], {
                "worker": self.id, "queues": list(self.opts.queues), "limit": n,
                "lease": self.opts.lease, "start": uuid.uuid4(),
                "share": self.opts.tenant_share, "tenants": self.opts.fair_tenants,
            })
            rows = await cur.fetchall()
        started = 0
        for tenant_id, job_id, attempt, type_, queue, payload, timeout, due_in in rows:
            if due_in is not None:  # held back by a limit: claim again when it may run
                self._due = min(self._due, asyncio.get_running_loop().time() + max(due_in, 0.0))
                continue
            ctx = JobContext(tenant_id=tenant_id, job_id=job_id, attempt=attempt, type=type_,
                             queue=queue, payload_json=payload, worker_id=self.id)
            self.running[job_id] = Running(ctx, asyncio.create_task(self._execute(ctx, timeout)))
            metrics.job_claimed(queue)
            started += 1
        return started

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self.stopping.wait()

    # -- executing -----------------------------------------------------------------

    async def _execute(self, ctx: JobContext, limit: float | None) -> None:
        handler = self.registry.get(ctx.type)
        try:
            if handler is None:
                raise PermanentError(f"no handler for job type {ctx.type!r} on worker {self.id}")
            if limit is None:
                result = await handler(ctx)
            else:
                async with asyncio.timeout(limit):
                    result = await handler(ctx)
            value = "null" if result is None else json.dumps(result, allow_nan=False)
            outcome, stack = "completed", None
        except asyncio.CancelledError:
            outcome, value, stack = "released", "handed back at shutdown", None
        except JobCancelled as exc:
            outcome, value, stack = "cancelled", str(exc), None
        except PermanentError as exc:
            outcome, value, stack = "permanent", _describe(exc), traceback.format_exc()
        except TimeoutError:
            outcome, value, stack = "error", f"timed out after {limit}s", None
        except (TypeError, ValueError) as exc:
            kind = "permanent" if "JSON" in str(exc) or "serializable" in str(exc) else "error"
            outcome, value, stack = kind, _describe(exc), traceback.format_exc()
        except Exception as exc:
            outcome, value, stack = "error", _describe(exc), traceback.format_exc()
        self._results.append((ctx, outcome, value, stack))
        self._to_flush.set()
        self.running.pop(ctx.job_id, None)
        self.processed += 1
        if self._full:
            self._wakeup.set()

    # -- writing results -------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            await self._to_flush.wait()
            self._to_flush.clear()
            async with self._write_lock:
                await self._flush_once()

    async def _flush_once(self) -> None:
        batch, self._results = self._results, []
        if not batch:
            return
        try:
            await self._retrying("flush", lambda: self._write(batch))
        except Exception:
            # Not a connection problem: a bug or bad data. The leases of these jobs
            # expire and they run again, which idempotent handlers absorb.
            log.exception("could not write %d results", len(batch))

    async def _write(self, batch: list[tuple[JobContext, str, Any, str | None]]) -> None:
        done = [(c, v) for c, o, v, _ in batch if o == "completed"]
        # One pipeline, read after its end: every statement goes out at once and the
        # batch costs one round trip. The statements up to the pipeline's sync are
        # one implicit transaction: all written or, connection lost, none (and the
        # batch is written again).
        async with self.pool.connection() as conn:
            async with conn.pipeline():
                if done:
                    completed = await store.send(
                        conn, "complete", worker=self.id,
                        tenants=[c.tenant_id for c, _ in done], ids=[c.job_id for c, _ in done],
                        attempts=[c.attempt for c, _ in done], results=[v for _, v in done],
                    )
                for ctx, outcome, value, stack in batch:
                    if outcome != "completed":
                        await store.send(
                            conn, "finish", worker=self.id, tenant_id=ctx.tenant_id,
                            id=ctx.job_id, attempt=ctx.attempt, outcome=outcome, error=value,
                            stack=stack,
                        )
            if done:
                fenced = len(done) - (await completed.fetchone())["written"]
                if fenced:
                    log.info("%d completions fenced off (lease lost)", fenced)

    # -- side tasks --------------------------------------------------------------------

    async def _listen(self) -> None:
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.05
                    self._wakeup.set()  # catch up on anything enqueued while deaf
                    async for note in conn.notifies():
                        if note.payload in self.opts.queues:
                            self._wakeup.set()
                        elif note.payload.startswith("stop "):
                            self._stop_job(note.payload[5:])
            except psycopg.Error as exc:
                log.debug("listen connection lost: %s", _first_line(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _stop_job(self, job_id: str) -> None:
        """A job asked to stop (cancelled, or its run was): its handler sees ctx.cancelled
        now; the heartbeat would tell it within a third of the lease otherwise."""
        with contextlib.suppress(ValueError):
            found = self.running.get(uuid.UUID(job_id))
            if found is not None:
                found.ctx.cancel()

    async def _heartbeat(self) -> None:
        interval = self.opts.lease / 3
        while True:
            await asyncio.sleep(interval)
            held = [r for r in self.running.values() if not r.lost]
            if not held:
                continue
            try:
                async with self.pool.connection() as conn:
                    rows = await store.fetch_all(
                        conn, "heartbeat", worker=self.id,
                        tenants=[r.ctx.tenant_id for r in held],
                        ids=[r.ctx.job_id for r in held],
                        attempts=[r.ctx.attempt for r in held], lease=self.opts.lease,
                    )
            except RETRYABLE_DB as exc:
                log.warning("heartbeat failed: %s", _first_line(exc))
                continue
            alive = {row["id"]: row["cancel_requested"] for row in rows}
            for r in held:
                if r.ctx.job_id not in alive:
                    r.lost = True  # fenced from now on: tell the handler to give up
                    r.ctx.cancel()
                elif alive[r.ctx.job_id]:
                    r.ctx.cancel()

    async def _maintenance(self) -> None:
        every = self.opts.recover_interval or self.opts.lease / 2
        while True:
            await asyncio.sleep(random.uniform(0.5, 1.0) * min(every, self.opts.poll_interval))
            try:
                async with self.pool.connection() as conn:
                    row = await store.fetch_one(conn, "recover", limit=500)
                    if row and row["recovered"]:
                        log.info("returned %d jobs with expired leases", row["recovered"])
                    if self.opts.schedules:
                        async with conn.transaction():  # due schedules stay locked
                            await schedules.fire_due(conn)
                    from agentplane.ops.maintenance import run_due  # partitions, retention
                    await run_due(conn)
            except RETRYABLE_DB as exc:
                log.debug("maintenance failed: %s", _first_line(exc))

    # -- shutdown ------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let in-flight jobs finish within the grace period, hand back the rest, flush."""
        tasks = [r.task for r in self.running.values()]
        if tasks:
            log.info("waiting up to %.0fs for %d running jobs", self.opts.shutdown_grace,
                     len(tasks))
            _, pending = await asyncio.wait(tasks, timeout=self.opts.shutdown_grace)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        deadline = max(self.opts.shutdown_grace, 5)
        try:
            async with asyncio.timeout(deadline), self._write_lock:
                while self._results:
                    await self._flush_once()
        except TimeoutError:
            log.error("could not write %d results before exiting; their leases will "
                      "expire and the jobs run again", len(self._results))


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def embed(app: Any, conninfo: str, options: WorkerOptions | None = None) -> None:
    """Run a worker beside the API in the app's lifespan (`agentplane up`).

    Handler modules come from AGENTPLANE_WORKER_IMPORTS (comma-separated).
    """
    from agentplane.queue.registry import import_modules

    import_modules(os.environ.get("AGENTPLANE_WORKER_IMPORTS", "").split(","))
    inner = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a: Any):
        async with inner(a) as state:
            worker = Worker(conninfo, options)
            task = asyncio.create_task(worker.run(), name="worker")
            a.state.worker = worker
            try:
                yield state
            finally:
                worker.stop()
                await task

    app.router.lifespan_context = lifespan
