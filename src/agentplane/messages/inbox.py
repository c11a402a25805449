"""Receiving: waiting for messages without holding a connection, and `Inbox`, an agent
instance's messages in Python.

One listening connection per process (`wakeups_for(db)`) hears `messages_send`'s
NOTIFY, which names the tenant and the receiving agent, and wakes that agent's waiters;
a waiter also looks again every `RECHECK_S` for what no notification announces (a
delayed message coming due, a lease passing, a notification lost while the listener
reconnected). Nothing waits inside a transaction.

    async with Inbox(db, tenant_id, "reviewer", instance_id) as inbox:
        async for message in inbox:
            async with db.tenant_connection(tenant_id) as conn:
                await record_effect(conn, message.id)   # the message id: an idempotency key
                await inbox.ack(message, conn=conn)      # effect and ack commit together
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import psycopg

from agentplane.db.pool import Connection, Database
from agentplane.errors import DatabaseUnavailable
from agentplane.messages import service, store
from agentplane.messages.models import Destination, MessageIn, Received, Sender

log = logging.getLogger("agentplane.messages")

RECHECK_S = 1.0
HEARTBEAT_S = 10.0
OFFLINE_AFTER_S = 60.0


class Wakeups:
    """Waiters per (tenant, agent), woken by the bus's notifications."""

    def __init__(self, db: Database, *, retry_seconds: float = 1.0) -> None:
        self.db = db
        self.retry_seconds = retry_seconds
        self._waiters: dict[tuple[UUID, UUID], set[asyncio.Future[None]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="agentplane-messages-listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait(self, tenant_id: UUID, agent_id: UUID, seconds: float) -> bool:
        """True when a message for the agent was announced within `seconds`."""
        self.start()
        key = (tenant_id, agent_id)
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(waiter)
        try:
            await asyncio.wait_for(waiter, seconds)
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._waiters.get(key)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[key]

    def dispatch(self, payload: str) -> None:
        tenant, _, agent = payload.partition(" ")
        for waiter in self._waiters.get((UUID(tenant), UUID(agent)), ()):
            if not waiter.done():
                waiter.set_result(None)

    async def _listen(self) -> None:
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.db.endpoints.app, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {store.CHANNEL}")
                    self.ready.set()
                    for waiters in list(self._waiters.values()):  # notes missed meanwhile
                        for waiter in waiters:
                            if not waiter.done():
                                waiter.set_result(None)
                    async for note in conn.notifies():
                        try:
                            self.dispatch(note.payload)
                        except ValueError:  # anyone may NOTIFY the channel
                            log.warning("ignored a malformed note on %s", store.CHANNEL)
            except asyncio.CancelledError:
                raise
            except psycopg.Error as exc:
                log.warning("message listener lost its connection (%s); reconnecting", exc)
            self.ready.clear()
            await asyncio.sleep(self.retry_seconds)


_wakeups: weakref.WeakKeyDictionary[Database, Wakeups] = weakref.WeakKeyDictionary()


def wakeups_for(db: Database) -> Wakeups:
    found = _wakeups.get(db)
    if found is None:
        found = _wakeups[db] = Wakeups(db)
    return found


async def close_wakeups(db: Database) -> None:
    found = _wakeups.pop(db, None)
    if found is not None:
        await found.stop()


async def receive(
    db: Database, tenant_id: UUID, agent_id: UUID, instance_id: UUID, *, wait_s: float = 0,
    limit: int = 10, lease_s: float = 30.0, correlation_id: str | None = None,
) -> list[Received]:
    """What is ready for the instance, waiting up to `wait_s` for something to come."""
    wakeups = wakeups_for(db)
    deadline = time.monotonic() + wait_s
    while True:
        async with db.tenant_connection(tenant_id) as conn:
            got = await service.receive(conn, tenant_id, agent_id, instance_id, limit=limit,
                                        lease_s=lease_s, correlation_id=correlation_id)
        left = deadline - time.monotonic()
        if got or left <= 0:
            return got
        await wakeups.wait(tenant_id, agent_id, min(left, RECHECK_S))


class Inbox:
    """An agent instance's messages: iterate to receive (leased, in order of priority
    and sending), then `ack` or `nack` each. It heartbeats for the instance and marks
    silent instances of the tenant offline (so what was addressed to them moves on)."""

    def __init__(
        self, db: Database, tenant_id: UUID, agent: str, instance_id: UUID, *,
        batch: int = 50, lease_s: float = 30.0, topics: tuple[str, ...] = (),
    ) -> None:
        self.db, self.tenant_id, self.agent, self.instance_id = db, tenant_id, agent, instance_id
        self.batch, self.lease_s, self.topics = batch, lease_s, topics
        self.agent_id: UUID | None = None
        self._ready: list[Received] = []
        self._beat: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Inbox:
        async with self.db.tenant_connection(self.tenant_id) as conn:
            self.agent_id = await service.receiver(conn, self.agent, self.instance_id)
            for topic in self.topics:
                await store.subscribe(conn, self.instance_id, topic)
        wakeups_for(self.db).start()
        self._beat = asyncio.get_running_loop().create_task(self._heartbeats())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            try:
                async with self.db.tenant_connection(self.tenant_id) as conn:
                    await service.presence(conn, OFFLINE_AFTER_S)
            except Exception as exc:  # the database may be away; receiving says so
                log.warning("presence check failed: %s", exc)

    def __aiter__(self) -> AsyncIterator[Received]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[Received]:
        while True:
            if not self._ready:
                try:
                    self._ready = await self.receive(wait_s=30)
                except (DatabaseUnavailable, psycopg.OperationalError) as exc:
                    # A restart or a failover: what was leased comes back after its lease.
                    log.warning("receiving failed (%s); trying again", exc)
                    await asyncio.sleep(RECHECK_S)
                continue
            yield self._ready.pop(0)

    async def receive(self, *, wait_s: float = 0, limit: int | None = None,
                      correlation_id: str | None = None) -> list[Received]:
        assert self.agent_id is not None, "use the inbox in `async with`"
        return await receive(self.db, self.tenant_id, self.agent_id, self.instance_id,
                             wait_s=wait_s, limit=limit or self.batch, lease_s=self.lease_s,
                             correlation_id=correlation_id)

    async def ack(self, *messages: Received, conn: Connection | None = None) -> list[UUID]:
        """Ack in `conn`'s transaction when given (with the effect of processing them)."""
        ids = [m.id for m in messages]
        if conn is not None:
            return await service.ack(conn, ids, self.instance_id)
        async with self.db.tenant_connection(self.tenant_id) as own:
            return await service.ack(own, ids, self.instance_id)

    async def nack(self, message: Received, error: str, delay_s: float | None = None) -> str:
        async with self.db.tenant_connection(self.tenant_id) as conn:
            return await service.nack(conn, message.id, self.instance_id, error, delay_s)

    async def send(self, to: dict[str, Any], type_: str, payload: Any = None,
                   **options: Any) -> UUID:
        """Send from this instance; `to` as the API takes it ({"agent": slug}, ...)."""
        body = MessageIn(to=Destination(**to), from_=Sender(instance=self.instance_id),
                         type=type_, payload={} if payload is None else payload, **options)
        async with self.db.tenant_connection(self.tenant_id) as conn:
            sent = await service.send(conn, self.tenant_id, [body])
        return next(iter(sent))

    async def request(self, to: dict[str, Any], type_: str, payload: Any = None, *,
                      within_s: float = 30.0, **options: Any) -> Received:
        """Send and wait for the reply: a message to this instance with the same
        correlation id. TimeoutError when none comes within `within_s` seconds."""
        correlation = options.pop("correlation_id", None) or str(uuid.uuid4())
        await self.send(to, type_, payload, correlation_id=correlation,
                        reply_to=self.instance_id, **options)
        deadline = time.monotonic() + within_s
        while (left := deadline - time.monotonic()) > 0:
            got = await self.receive(wait_s=left, limit=1, correlation_id=correlation)
            if got:
                await self.ack(*got)
                return got[0]
        raise TimeoutError(f"no reply to {type_} within {within_s} s")

    async def reply(self, to: Received, type_: str, payload: Any = None, **options: Any) -> UUID:
        """Answer a request: to its reply_to instance (else its sender), same correlation."""
        target = to.reply_to or to.from_instance
        if target is None:
            raise ValueError("the message names no instance to reply to")
        return await self.send({"instance": target}, type_, payload,
                               correlation_id=to.correlation_id, **options)
