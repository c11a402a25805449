"""The queue's Python API: enqueue, get, list, cancel, retry, wait, pause, limits, dead letters.

Calls with a `tenant_id` run on that tenant's connection (row-level security);
calls without one run on the owner connection (CLI and admin paths). `enqueue`
also takes the caller's own connection, so a job is enqueued in the caller's
transaction and rolled back with it.

One module past 400 lines on purpose: it is the one class (JobQueue) that handlers,
routes and commands program against, and each method is a thin rule over one named
query of queries.sql.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from random import getrandbits as _bits
from typing import Any
from uuid import UUID

import psycopg
from pydantic import ValidationError

from agentplane import ids, pagination
from agentplane.db.errors import translate_errors
from agentplane.db.pool import Connection, Database, set_tenant
from agentplane.errors import AgentplaneError, Conflict, NotFound, ValidationFailed
from agentplane.queue import store
from agentplane.queue.models import (
    FINISHED,
    DeadLetter,
    Job,
    JobSpec,
    Limit,
    Page,
    Pause,
    Status,
)
from agentplane.queue.registry import Registry
from agentplane.queue.registry import registry as default_registry

WAIT_POLL = 1.0
"""Seconds between reads of a job `wait_for_result` waits on, notification or not."""


class JobTimeout(AgentplaneError):
    status, type, title = 504, "job-timeout", "The job did not finish in time"


def uuid7() -> UUID:
    """Time-ordered ids keep the primary key's inserts at the right edge of the index.
    Built from one integer: a bytearray round trip costs more than the insert's share."""
    ms = time.time_ns() // 1_000_000
    return UUID(int=(ms << 80) | 0x7000 << 64 | _bits(12) << 64 | 0x8 << 60 | _bits(62))


def validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ())) or "value"
        parts.append(f"{where}: {err.get('msg', 'invalid').removeprefix('Value error, ')}")
    return "; ".join(parts)


def make_spec(type_: str, payload: Any = None, **options: Any) -> JobSpec:
    try:
        return JobSpec(type=type_, payload={} if payload is None else payload, **options)
    except ValidationError as exc:
        raise ValidationFailed(validation_message(exc)) from None


def _range(id_prefix: str | None, noun: str) -> dict[str, UUID | None]:
    """A listing's id_prefix as the query's id range."""
    lo, hi = ids.optional_bounds(id_prefix, noun)
    return {"lo": lo, "hi": hi}


class JobQueue:
    def __init__(self, db: Database, registry: Registry | None = None) -> None:
        self.db = db
        self.registry = registry or default_registry
        self._known_types: set[str] = set()

    @contextlib.asynccontextmanager
    async def _conn(
        self, tenant_id: UUID | str | None, conn: Connection | None = None
    ) -> AsyncIterator[Connection]:
        if conn is not None:
            with translate_errors():
                yield conn
        elif tenant_id is not None:
            async with self.db.tenant_connection(tenant_id) as c:
                yield c
        else:
            async with self.db.admin_connection() as c:
                yield c

    # -- enqueue ---------------------------------------------------------------

    async def enqueue(
        self,
        type_: str,
        payload: Any = None,
        *,
        tenant_id: UUID | str | None = None,
        conn: Connection | None = None,
        allow_unknown: bool = False,
        **options: Any,
    ) -> UUID:
        """Enqueue one job; returns its id (the live job's id for a known idempotency key)."""
        spec = make_spec(type_, payload, **options)
        ids = await self.enqueue_many(
            [spec], tenant_id=tenant_id, conn=conn, allow_unknown=allow_unknown
        )
        return ids[0]

    async def enqueue_many(
        self,
        specs: Sequence[JobSpec],
        *,
        tenant_id: UUID | str | None = None,
        conn: Connection | None = None,
        allow_unknown: bool = False,
    ) -> list[UUID]:
        """Enqueue jobs in one statement; ids in the order of `specs`."""
        if not specs:
            return []
        if tenant_id is None and conn is None:
            raise ValidationFailed("enqueue needs a tenant_id or a tenant connection")
        if conn is None:
            return await self._enqueue_alone(specs, _uuid(tenant_id, "tenant id"), allow_unknown)
        with translate_errors():
            if not allow_unknown:
                await self._check_types(conn, {s.type for s in specs})
            if tenant_id is None:
                row = await store.fetch_one(conn, "current_tenant")
                if row is None or row["tenant_id"] is None:
                    raise ValidationFailed("the connection has no tenant (app.tenant_id)")
            ids = [uuid7() for _ in specs]
            if all(s.idempotency_key is None for s in specs):
                # Every job is inserted: nothing to read back, so on a pipelined
                # connection the insert goes out with the caller's next round trip.
                await store.send(conn, "enqueue", tenant_id=tenant_id, **_columns(ids, specs))
                return ids
            rows = await store.fetch_all(conn, "enqueue", tenant_id=tenant_id,
                                         **_columns(ids, specs))
            return await self._live_ids(conn, tenant_id, ids, specs, {r["id"] for r in rows})

    async def _enqueue_alone(
        self, specs: Sequence[JobSpec], tenant_id: UUID, allow_unknown: bool
    ) -> list[UUID]:
        """Enqueue in a transaction of its own: one round trip. The tenant setting and
        the insert go out in one pipeline on an autocommit connection, which runs
        them as one implicit transaction (ended by the pipeline's sync)."""
        ids = [uuid7() for _ in specs]
        with translate_errors():
            async with self.db.autocommit_pool.connection() as conn:
                if not allow_unknown:
                    await self._check_types(conn, {s.type for s in specs})
                async with conn.pipeline():
                    await set_tenant(conn, tenant_id)
                    cur = await store.send(conn, "enqueue", tenant_id=tenant_id,
                                           **_columns(ids, specs))
                inserted = {r["id"] for r in await cur.fetchall()}
                if len(inserted) == len(ids):
                    return ids
                async with conn.transaction():
                    await set_tenant(conn, tenant_id)
                    return await self._live_ids(conn, tenant_id, ids, specs, inserted)

    async def _live_ids(
        self, conn: Connection, tenant_id: UUID | str | None, ids: list[UUID],
        specs: Sequence[JobSpec], inserted: set[UUID],
    ) -> list[UUID]:
        """Ids in the order of `specs`: a job skipped for its idempotency key gets the
        id of the live job holding that key."""
        missing = [s.idempotency_key for i, s in zip(ids, specs, strict=True)
                   if i not in inserted]
        if not missing:
            return ids
        live = await store.fetch_all(conn, "live_by_idempotency_key", tenant_id=tenant_id,
                                     keys=missing)
        existing = {r["idempotency_key"]: r["id"] for r in live}
        return [i if i in inserted else existing.get(s.idempotency_key, i)
                for i, s in zip(ids, specs, strict=True)]

    async def check_known(self, types: set[str]) -> None:
        """A ValidationFailed naming the types no worker has a handler for, as enqueue
        refuses them (for what enqueues later: schedules)."""
        with translate_errors():
            async with self.db.autocommit_pool.connection() as conn:
                await self._check_types(conn, types)

    async def _check_types(self, conn: Connection, types: set[str]) -> None:
        unknown = types - set(self.registry.types()) - self._known_types
        if unknown:
            rows = await store.fetch_all(conn, "known_types")
            self._known_types = {r["name"] for r in rows}
            unknown -= self._known_types
        if unknown:
            names = ", ".join(sorted(unknown))
            raise ValidationFailed(
                f"unknown job type {names}: no worker has a handler for it "
                "(pass allow_unknown to enqueue it anyway)"
            )

    # -- reading -----------------------------------------------------------------

    async def get(self, job_id: UUID | str, *, tenant_id: UUID | str | None = None) -> Job:
        job_id = _uuid(job_id, "job id")
        async with self._conn(tenant_id) as c:
            row = await store.fetch_one(c, "get_job", id=job_id, tenant_id=tenant_id)
        if row is None:
            raise NotFound(f"job {job_id} not found")
        return Job.model_validate(row)

    async def list(
        self,
        *,
        tenant_id: UUID | str | None = None,
        status: Status | str | None = None,
        type_: str | None = None,
        queue: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        id_prefix: str | None = None,
    ) -> Page[Job]:
        if not 1 <= limit <= 1000:
            raise ValidationFailed("limit must be between 1 and 1000")
        if status is not None and status not in Status.__members__:
            raise ValidationFailed(f"unknown status {status!r}; one of: {', '.join(Status)}")
        before_at, before_id = pagination.decode(cursor) if cursor else (None, None)
        async with self._conn(tenant_id) as c:
            rows = await store.fetch_all(
                c, "list_jobs", tenant_id=tenant_id, status=status, type=type_, queue=queue,
                before_at=before_at, before_id=before_id, limit=limit + 1,
                **_range(id_prefix, "job"),
            )
        items = [Job.model_validate(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page[Job](
            items=items,
            next_cursor=pagination.encode(items[-1].created_at, items[-1].id) if more else None,
        )

    async def wait_for_result(
        self,
        job_id: UUID | str,
        *,
        tenant_id: UUID | str | None = None,
        timeout: float = 30,  # noqa: ASYNC109 -- seconds, the job's deadline, as in wait_for
    ) -> Job:
        """The job once finished (completed, cancelled or dead letter).

        Woken by the notification the database sends when a job finishes; the job
        is also read again every `WAIT_POLL` seconds, and without a listening
        connection (LISTEN refused, connection lost) the wait polls instead."""
        job_id = _uuid(job_id, "job id")
        deadline = time.monotonic() + timeout
        listener: psycopg.AsyncConnection | None = None
        try:
            try:
                listener = await _listen(self.db.endpoints.app)
            except psycopg.Error:
                listener = None
            delay = 0.005
            while True:
                job = await self.get(job_id, tenant_id=tenant_id)
                if job.status in FINISHED:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    raise JobTimeout(f"job {job_id} is still {job.status} after {timeout}s")
                if listener is None:
                    await asyncio.sleep(min(delay, left))
                    delay = min(delay * 2, 0.25)
                    continue
                try:
                    await _notified(listener, str(job_id), min(left, WAIT_POLL))
                except psycopg.Error:
                    listener = await _close(listener)
        finally:
            await _close(listener)

    # -- changing ------------------------------------------------------------------

    async def cancel(self, job_id: UUID | str, *, tenant_id: UUID | str | None = None) -> Job:
        """Cancel a waiting job, or ask a running one to stop. A finished job: 409."""
        job_id = _uuid(job_id, "job id")
        async with self._conn(tenant_id) as c:
            row = await store.fetch_one(c, "cancel_job", id=job_id, tenant_id=tenant_id)
            if row is None:
                current = await store.fetch_one(c, "get_job", id=job_id, tenant_id=tenant_id)
                if current is None:
                    raise NotFound(f"job {job_id} not found")
                raise Conflict(f"job {job_id} is already {current['status']}; nothing to cancel")
            if row["status"] == "cancelled":  # a running job's handler reports it later
                await store.execute(c, "notify_done", id=job_id)
            else:
                await store.execute(c, "notify_stop", id=job_id)
        return Job.model_validate(row)

    async def retry(self, job_id: UUID | str, *, tenant_id: UUID | str | None = None) -> Job:
        """Queue a dead-lettered, cancelled, failed or stuck job again, at once and with a
        fresh set of attempts. Not when its dead letter was requeued as a fresh job."""
        job_id = _uuid(job_id, "job id")
        async with self._conn(tenant_id) as c:
            row = await store.fetch_one(c, "retry_job", id=job_id, tenant_id=tenant_id)
            if row is None:
                current = await store.fetch_one(c, "get_job", id=job_id, tenant_id=tenant_id)
                if current is None:
                    raise NotFound(f"job {job_id} not found")
                fresh = await store.fetch_one(c, "requeued_as", id=job_id,
                                              tenant_id=current["tenant_id"])
                if fresh is not None:
                    raise Conflict(f"job {job_id}'s dead letter was already requeued as job "
                                   f"{fresh['requeued_job_id']}")
                raise Conflict(f"job {job_id} is {current['status']}; only dead-lettered, "
                               "cancelled, failed or stuck jobs can be retried")
            await store.execute(c, "notify", queue=row["queue"])
        return Job.model_validate(row)

    async def pause(
        self, queue: str, type_: str | None = None, *, tenant_id: UUID | str | None = None
    ) -> int:
        """Pause a queue (or one type in it) for one tenant, or for every tenant when
        `tenant_id` is None; returns the jobs held."""
        make_spec(type_ or "-", queue=queue)
        async with self.db.admin_connection() as c:
            row = await store.fetch_one(c, "pause", queue=queue, type=type_,
                                        tenant_id=_tenant(tenant_id))
        return int(row["jobs"]) if row else 0

    async def resume(
        self, queue: str, type_: str | None = None, *, tenant_id: UUID | str | None = None
    ) -> int:
        """Lift the pause `pause` set with the same arguments; returns the jobs released
        (jobs another pause still covers stay paused)."""
        make_spec(type_ or "-", queue=queue)
        async with self.db.admin_connection() as c:
            row = await store.fetch_one(c, "resume", queue=queue, type=type_,
                                        tenant_id=_tenant(tenant_id))
            await store.execute(c, "notify", queue=queue)
        return int(row["jobs"]) if row else 0

    async def pauses(self, *, tenant_id: UUID | str) -> list[Pause]:
        """The pauses that hold the tenant's jobs: its own and the operators'."""
        async with self.db.tenant_connection(tenant_id) as c:
            rows = await store.fetch_all(c, "pauses")
        return [Pause(queue=r["queue"], type=r["type"], paused_at=r["paused_at"],
                      everyone=r["tenant_id"] is None) for r in rows]

    async def set_limit(self, limit: Limit) -> None:
        """Global limits of a concurrency key: max running jobs and/or jobs per second."""
        async with self.db.admin_connection() as c:
            await store.execute(c, "set_limit", **limit.model_dump())

    async def delete_limit(self, key: str) -> None:
        async with self.db.admin_connection() as c:
            await store.execute(c, "delete_limit", key=key)

    # -- dead letters --------------------------------------------------------------

    async def dead_letters(
        self,
        *,
        tenant_id: UUID | str | None = None,
        type_: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        id_prefix: str | None = None,
    ) -> Page[DeadLetter]:
        if not 1 <= limit <= 1000:
            raise ValidationFailed("limit must be between 1 and 1000")
        before_at, before_id = pagination.decode(cursor) if cursor else (None, None)
        async with self._conn(tenant_id) as c:
            rows = await store.fetch_all(
                c, "list_dead_letters", tenant_id=tenant_id, type=type_,
                before_at=before_at, before_id=before_id, limit=limit + 1,
                **_range(id_prefix, "dead letter"),
            )
        items = [DeadLetter.model_validate(r) for r in rows[:limit]]
        more = len(rows) > limit
        return Page[DeadLetter](
            items=items,
            next_cursor=pagination.encode(items[-1].moved_at, items[-1].id) if more else None,
        )

    async def requeue(
        self, dead_letter_id: UUID | str, *, tenant_id: UUID | str | None = None
    ) -> UUID:
        """A fresh job from a dead letter (same type, payload, queue and priority)."""
        dead_letter_id = _uuid(dead_letter_id, "dead letter id")
        async with self._conn(tenant_id) as c:
            dl = await store.fetch_one(c, "lock_dead_letter", id=dead_letter_id,
                                       tenant_id=tenant_id)
            if dl is None:
                raise NotFound(f"dead letter {dead_letter_id} not found")
            if dl["requeued_job_id"] is not None:
                raise Conflict(f"dead letter {dead_letter_id} was already requeued as job "
                               f"{dl['requeued_job_id']}")
            spec = make_spec(dl["type"], dl["payload"], queue=dl["queue"],
                             priority=dl["priority"])
            [job_id] = await self.enqueue_many(
                [spec], tenant_id=dl["tenant_id"], conn=c, allow_unknown=True
            )
            await store.execute(c, "mark_requeued", tenant_id=dl["tenant_id"],
                                id=dead_letter_id, job_id=job_id)
        return job_id


async def ask_to_stop(
    conn: Connection, tenant_id: UUID, type_: str, match: dict[str, Any]
) -> list[UUID]:
    """On the caller's transaction: ask the tenant's running jobs of `type_` whose payload
    contains `match` to stop; their workers hear of it when it commits."""
    from psycopg.types.json import Jsonb

    rows = await store.fetch_all(
        conn, "ask_to_stop", tenant_id=tenant_id, type=type_, match=Jsonb(match)
    )
    return [r["id"] for r in rows]


async def _listen(conninfo: str) -> psycopg.AsyncConnection:
    """A connection listening for finished jobs (before the job's first read: no race)."""
    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    try:
        await store.execute(conn, "listen_done")
    except psycopg.Error:
        await _close(conn)
        raise
    return conn


async def _notified(conn: psycopg.AsyncConnection, job_id: str, within: float) -> None:
    """Returns when a notification names the job, or after `within` seconds."""
    async for note in conn.notifies(timeout=within):
        if job_id in note.payload.split(","):
            return


async def _close(conn: psycopg.AsyncConnection | None) -> None:
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            await conn.close()


def _tenant(value: UUID | str | None) -> UUID | None:
    return None if value is None else _uuid(value, "tenant id")


def _uuid(value: UUID | str, what: str) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ValidationFailed(f"{what} {value!r} is not a UUID") from None


def job_columns(spec: JobSpec) -> dict[str, Any]:
    """A job's columns as queue_enqueue (queue/sql/jobs.sql) takes them, but its id."""
    return {
        "queue": spec.queue,
        "type": spec.type,
        "payload": spec.payload,
        "priority": spec.priority.value,
        "delay": spec.delay,
        "max_attempts": spec.max_attempts,
        "backoff_base": spec.backoff_base,
        "backoff_max": max(spec.backoff_max, spec.backoff_base),
        "timeout": spec.timeout,
        "idempotency_key": spec.idempotency_key,
        "concurrency_key": spec.concurrency_key,
    }


def _columns(ids: list[UUID], specs: Sequence[JobSpec]) -> dict[str, str]:
    return {"jobs": json.dumps(
        [{"id": str(i), **job_columns(s)} for i, s in zip(ids, specs, strict=True)],
        allow_nan=False,
    )}
