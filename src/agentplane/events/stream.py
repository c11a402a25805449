"""Live delivery: ONE listening connection per process, fanned out in memory.

A notification carries the events a commit stored when they fit in it ("E"), or
only "run R of tenant T has events F..L" ("A"), or an unstored llm.delta ("D").
Carried events are parsed once and handed to every follower of the run as the same
objects; a follower reads the table only when it sees a gap after the last sequence
number it delivered (an "A" note, a note lost while the listening connection
reconnected, a quiet keep-alive period), and concurrent followers of a run share
that read. Notifications are sent only on commit, so nothing rolled back arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import weakref
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from pydantic import TypeAdapter

from agentplane import metrics
from agentplane.db.pool import Database
from agentplane.events import store
from agentplane.events.models import Event, NewEvent
from agentplane.events.types import RUN_LEVEL_PREFIX

log = logging.getLogger("agentplane.events")

READ_BATCH = 500
_CARRIED = TypeAdapter(list[NewEvent])
Note = tuple[UUID, int, int, list[Event] | None]


@dataclass(eq=False)
class Subscription:
    """One follower's mailbox: events in notification order (stored ones and unstored
    deltas), the highest sequence number announced, and (tenant streams) notes: run,
    first and last sequence number, the events when the note carried them."""

    events: deque[Event] = field(default_factory=lambda: deque(maxlen=10_000))
    announced: int = 0
    notes: deque[Note] = field(default_factory=lambda: deque(maxlen=10_000))
    _waiter: asyncio.Future[None] | None = None
    _woken: bool = False

    def push(self, events: list[Event]) -> None:
        self.events.extend(events)
        self.wake()

    def announce(self, last: int) -> None:
        self.announced = max(self.announced, last)
        self.wake()

    def wake(self) -> None:
        self._woken = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def clear(self) -> None:
        self._woken = False

    async def wait(self, seconds: float) -> bool:
        """True when woken (since the last `clear`), False when `seconds` passed first."""
        if self._woken:
            return True
        # A bare future and one timer, not asyncio.Event.wait() or wait_for(): no task
        # and no extra future per wait, which a follower does for every wake-up.
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _expire, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        return self._woken


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class EventHub:
    """Owns the listening connection and the subscribers of this process."""

    def __init__(self, db: Database, *, retry_seconds: float = 1.0) -> None:
        self.db = db
        self.retry_seconds = retry_seconds
        self.ready = asyncio.Event()
        self._runs: dict[tuple[UUID, UUID], set[Subscription]] = {}
        self._tenants: dict[UUID, set[Subscription]] = {}
        self._task: asyncio.Task[None] | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._reads: dict[tuple[UUID, UUID, int], asyncio.Future[list[Event]]] = {}

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name="agentplane-events-listener")
            async with self.db.app_connection() as conn:
                await store.ensure_partitions(conn, 3)
        await self.ready.wait()

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.ready.clear()

    @contextlib.asynccontextmanager
    async def subscribe_run(self, tenant_id: UUID, run_id: UUID) -> AsyncIterator[Subscription]:
        await self.start()
        sub = Subscription()
        key = (tenant_id, run_id)
        self._runs.setdefault(key, set()).add(sub)
        try:
            yield sub
        finally:
            self._discard(self._runs, key, sub)

    @contextlib.asynccontextmanager
    async def subscribe_tenant(self, tenant_id: UUID) -> AsyncIterator[Subscription]:
        await self.start()
        sub = Subscription()
        self._tenants.setdefault(tenant_id, set()).add(sub)
        try:
            yield sub
        finally:
            self._discard(self._tenants, tenant_id, sub)

    @property
    def subscribers(self) -> int:
        return sum(map(len, self._runs.values())) + sum(map(len, self._tenants.values()))

    @property
    def tenant_subscribers(self) -> int:
        return sum(map(len, self._tenants.values()))

    @staticmethod
    def _discard(index: dict[Any, set[Subscription]], key: Any, sub: Subscription) -> None:
        subs = index.get(key)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del index[key]

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.db.endpoints.app, autocommit=True
                )
                async with conn:
                    await store.listen(conn)
                    self._conn = conn
                    self.ready.set()
                    # Whatever was committed while we were not listening is in the table.
                    self._wake_all()
                    async for note in conn.notifies():
                        try:
                            self.dispatch(note.payload)
                        except (ValueError, KeyError, TypeError):
                            # Not one of ours (anyone may NOTIFY the channel): the
                            # listener must live on for every follower.
                            log.warning("ignored a malformed note on %s", store.CHANNEL)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                log.warning("event listener lost its connection (%s); reconnecting", exc)
            finally:
                self._conn = None
            await asyncio.sleep(self.retry_seconds)

    def dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        if kind in ("E", "A"):
            tenant, run, first, last, *carried = rest.split(" ", 5)
            tenant_id, run_id = UUID(tenant), UUID(run)
            subs = self._runs.get((tenant_id, run_id))
            dashboards = self._tenants.get(tenant_id)
            if not subs and not dashboards:
                return
            # Parsed once, for all the followers of the run and of its tenant.
            events = _whole(run_id, int(first), *carried) if kind == "E" else None
            if events:
                metrics.fanout(events[0].created_at)
            for sub in subs or ():
                if events is not None:
                    sub.push(events)
                else:
                    sub.announce(int(last))
            for sub in dashboards or ():
                sub.notes.append((run_id, int(first), int(last), events))
                sub.wake()
        elif kind == "D":
            delta = json.loads(rest)
            key = (UUID(delta.pop("tenant_id")), UUID(delta["run_id"]))
            subs = self._runs.get(key)
            if subs:
                event = Event(**delta)
                for sub in subs:
                    sub.push([event])

    def _wake_all(self) -> None:
        """After (re)connecting: notes may have been missed, so everyone re-reads."""
        for subs in self._runs.values():
            for sub in subs:
                sub.announce(2**63 - 1)
        for subs in self._tenants.values():
            for sub in subs:
                sub.wake()

    async def read(self, tenant_id: UUID, run_id: UUID, after: int) -> list[Event]:
        """The run's stored events after `after` (up to READ_BATCH). Followers of a run
        woken together ask for the same rows: they share one query."""
        key = (tenant_id, run_id, after)
        shared = self._reads.get(key)
        if shared is None:
            shared = self._reads[key] = asyncio.ensure_future(
                self._read(tenant_id, run_id, after)
            )
            shared.add_done_callback(lambda _: self._reads.pop(key, None))
        # One follower going away must not cancel the read for the others.
        return await asyncio.shield(shared)

    async def read_run_level(
        self, tenant_id: UUID, run_id: UUID, after: int, upto: int
    ) -> list[Event]:
        """The run's stored run-level events (run.*) after `after`, up to `upto`."""
        async with self.db.tenant_connection(tenant_id) as conn:
            rows = await store.read(
                conn, tenant_id=tenant_id, run_id=run_id, after=after, upto=upto,
                limit=READ_BATCH, patterns=[RUN_LEVEL_PREFIX + "%"],
            )
        return [Event(**row) for row in rows]

    async def _read(self, tenant_id: UUID, run_id: UUID, after: int) -> list[Event]:
        async with self.db.tenant_connection(tenant_id) as conn:
            rows = await store.read(
                conn, tenant_id=tenant_id, run_id=run_id, after=after, limit=READ_BATCH
            )
        return [Event(**row) for row in rows]


_hubs: weakref.WeakKeyDictionary[Database, EventHub] = weakref.WeakKeyDictionary()


def hub_for(db: Database) -> EventHub:
    """The process's hub for this database, created on first use."""
    hub = _hubs.get(db)
    if hub is None:
        hub = _hubs[db] = EventHub(db)
    return hub


async def close_hub(db: Database) -> None:
    hub = _hubs.pop(db, None)
    if hub is not None:
        await hub.stop()


def _whole(run_id: UUID, first: int, at: str, body: str) -> list[Event]:
    """The events an "E" note carries, numbered from `first`, created `at`."""
    created = datetime.fromisoformat(at)
    return [
        Event.model_construct(
            run_id=run_id,
            seq=first + i,
            type=e.type,
            task_id=e.task_id,
            agent=e.agent,
            message=e.message,
            payload=e.payload,
            created_at=created,
        )
        for i, e in enumerate(_CARRIED.validate_json(body))
    ]
