"""Live wake-ups: ONE listening connection per process, fanned out in memory.

A notification says only "run R of tenant T has events F..L" (or carries an unstored
llm.delta). Followers treat it as a wake-up and read the table after the last
sequence number they delivered, so notifications that are coalesced, or lost while
the listening connection reconnects, cost latency, never events.
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
from typing import Any
from uuid import UUID

import psycopg

from agentplane.db.pool import Database
from agentplane.events import store

log = logging.getLogger("agentplane.events")


@dataclass(eq=False)
class Subscription:
    """One follower's mailbox: a wake flag, unstored deltas, and (tenant streams) notes."""

    wake: asyncio.Event = field(default_factory=asyncio.Event)
    deltas: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))
    notes: deque[tuple[UUID, int, int]] = field(default_factory=lambda: deque(maxlen=10_000))

    async def wait(self, seconds: float) -> bool:
        """True when woken, False when `seconds` passed first."""
        try:
            await asyncio.wait_for(self.wake.wait(), seconds)
        except TimeoutError:
            return False
        return True


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
                        self.dispatch(note.payload)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                log.warning("event listener lost its connection (%s); reconnecting", exc)
            finally:
                self._conn = None
            await asyncio.sleep(self.retry_seconds)

    def dispatch(self, payload: str) -> None:
        kind, _, rest = payload.partition(" ")
        if kind == "A":
            tenant, run, first, last = rest.split(" ")
            run_id = UUID(run)
            for sub in self._runs.get((UUID(tenant), run_id), ()):
                sub.wake.set()
            for sub in self._tenants.get(UUID(tenant), ()):
                sub.notes.append((run_id, int(first), int(last)))
                sub.wake.set()
        elif kind == "D":
            delta = json.loads(rest)
            key = (UUID(delta.pop("tenant_id")), UUID(delta["run_id"]))
            for sub in self._runs.get(key, ()):
                sub.deltas.append(delta)
                sub.wake.set()

    def _wake_all(self) -> None:
        for subs in [*self._runs.values(), *self._tenants.values()]:
            for sub in subs:
                sub.wake.set()


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
