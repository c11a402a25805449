"""This process's cache of verified API keys and its leased rate-limit allowance.

Validity: an entry (key digest -> principal) is served only while the process is
LISTENing to `agentplane_auth`, which triggers in PostgreSQL notify at commit when a
key, a membership, a user or a tenant changes (revocation, expiry date, role,
removal, deactivation, limits). Pending notifications are read (one non-blocking
recv) before every cache hit, so a change committed elsewhere applies here as soon as
its notification reaches this process. An entry also lapses after `TTL_SECONDS`
(a safety net) and at the key's expiry time; the whole cache is flushed whenever the
listening connection is lost or re-established, and bypassed while it is down.

Rate limits: allowance is leased from the shared counters in PostgreSQL by
`auth_lease` (atomic, never past the limit) in blocks of at most `MAX_BLOCK`, and
spent here one request at a time. See auth_lease for the precision this costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass
from uuid import UUID

import psycopg

from agentplane.auth import store
from agentplane.auth.models import Principal
from agentplane.db.pool import Database

log = logging.getLogger("agentplane.auth")

TTL_SECONDS = 10.0
MAX_BLOCK = 50
PING_SECONDS = 2.0
RETRY_SECONDS = 1.0


@dataclass(slots=True)
class Entry:
    principal: Principal
    email: str
    tenant_slug: str
    expires_at: float | None
    """The key's expiry (epoch seconds), if any."""
    fresh_until: float
    """time.monotonic() after which the key is checked in PostgreSQL again."""


@dataclass(slots=True)
class Lease:
    """Allowance of one subject (a key or a tenant) for the current window."""

    limit: int
    hits: int
    """The shared counter after our last grant (it includes `left`)."""
    left: int
    until: float
    """time.monotonic() at the end of the window."""
    refused: bool = False
    """PostgreSQL granted nothing: the subject is spent until the window ends."""

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.hits + self.left)


class KeyCache:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.entries: dict[bytes, Entry] = {}
        self.leases: dict[UUID, Lease] = {}
        self.subjects: dict[bytes, tuple[UUID, UUID]] = {}
        """Key digest -> (key id, tenant id) of keys verified here: finds their leases
        when the entry itself has lapsed. Says nothing about validity."""
        self.listening = False
        self.listener_pid: int | None = None
        self._epoch = 0
        self._pinging = False
        self._conn: psycopg.AsyncConnection | None = None
        self._lost = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- the request path (no awaits) ------------------------------------------------

    def get(self, digest: bytes, now: float) -> Entry | None:
        if not self.listening or self._pinging:
            return None
        self._drain()
        entry = self.entries.get(digest)
        if entry is None:
            return None
        if entry.fresh_until <= now or (
            entry.expires_at is not None and entry.expires_at <= time.time()
        ):
            del self.entries[digest]
            return None
        return entry

    def epoch(self) -> int:
        """Taken before a lookup in PostgreSQL; `put` drops the result if anything was
        invalidated meanwhile (it may predate the change)."""
        return self._epoch if self.listening else -1

    def put(self, digest: bytes, entry: Entry, epoch: int) -> None:
        if self.listening and epoch == self._epoch:
            self.entries[digest] = entry

    def forget(self, digest: bytes) -> None:
        self.entries.pop(digest, None)
        self.subjects.pop(digest, None)

    # --- invalidation ----------------------------------------------------------------

    def invalidate(
        self,
        *,
        key_id: UUID | None = None,
        user_id: UUID | None = None,
        tenant_id: UUID | None = None,
    ) -> None:
        """Drop what depends on a changed key, user or tenant (and those leases, whose
        limit may have changed)."""
        self._epoch += 1
        doomed = [
            digest
            for digest, e in self.entries.items()
            if e.principal.api_key_id == key_id
            or e.principal.user_id == user_id
            or e.principal.tenant_id == tenant_id
        ]
        for digest in doomed:
            del self.entries[digest]
        for subject in (key_id, tenant_id):
            if subject is not None:
                self.leases.pop(subject, None)

    def flush(self) -> None:
        self._epoch += 1
        self.entries.clear()

    def _apply(self, payload: str) -> None:
        kind, _, ident = payload.partition(" ")
        try:
            subject = UUID(ident)
        except ValueError:
            self.flush()  # not ours to understand: be safe
            return
        if kind == "k":
            self.invalidate(key_id=subject)
        elif kind == "u":
            self.invalidate(user_id=subject)
        elif kind == "t":
            self.invalidate(tenant_id=subject)
        else:
            self.flush()

    def _drain(self) -> None:
        """Apply the notifications already received (a non-blocking read)."""
        conn = self._conn
        if conn is None or self._pinging or not self.listening:
            return
        pgconn = conn.pgconn
        try:
            pgconn.consume_input()
            while (note := pgconn.notifies()) is not None:
                self._apply(note.extra.decode())
        except psycopg.Error:
            self._down()

    # --- the listening connection ----------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._listen(), name="agentplane-auth-listener"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _down(self) -> None:
        self.listening = False
        self.flush()
        self._lost.set()

    def _closed(self) -> bool:
        return self.db.autocommit_pool.closed

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed():
            conn: psycopg.AsyncConnection | None = None
            fd = None
            try:
                conn = await store.auth_listener(self.db)
                conn.add_notify_handler(lambda note: self._apply(note.payload))
                self._lost.clear()
                self._conn = conn
                fd = conn.pgconn.socket
                loop.add_reader(fd, self._drain)
                self.flush()  # whatever changed while nobody listened
                self.listening = True
                self.listener_pid = conn.info.backend_pid
                while self.listening and not self._closed():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._lost.wait(), PING_SECONDS)
                    if not self.listening or self._closed():
                        break
                    # A silently dead connection would deliver nothing: check it.
                    loop.remove_reader(fd)
                    self._pinging = True
                    try:
                        await store.ping(conn)
                    finally:
                        self._pinging = False
                        loop.add_reader(fd, self._drain)
                    self._drain()
            except (psycopg.Error, OSError) as exc:
                if not self._closed():
                    log.warning("auth listener lost its connection (%s); reconnecting", exc)
            finally:
                self._down()
                self._conn = None
                self.listener_pid = None
                if fd is not None:
                    loop.remove_reader(fd)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
            if not self._closed():
                await asyncio.sleep(RETRY_SECONDS)


_caches: weakref.WeakKeyDictionary[Database, KeyCache] = weakref.WeakKeyDictionary()


def cache_for(db: Database) -> KeyCache:
    """The process's cache for this database; its listener starts on first use."""
    cache = _caches.get(db)
    if cache is None:
        cache = _caches[db] = KeyCache(db)
        cache.start()
    return cache


def invalidate(
    db: Database,
    *,
    key_id: UUID | None = None,
    user_id: UUID | None = None,
    tenant_id: UUID | None = None,
) -> None:
    """After a change committed by this process: apply it here at once (the other
    processes hear of it by notification)."""
    cache = _caches.get(db)
    if cache is not None:
        cache.invalidate(key_id=key_id, user_id=user_id, tenant_id=tenant_id)


async def close(db: Database) -> None:
    cache = _caches.pop(db, None)
    if cache is not None:
        await cache.stop()
