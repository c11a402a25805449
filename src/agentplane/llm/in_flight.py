"""Calls in flight per provider, counted in this process and shared with the others
through PostgreSQL without a round trip per call: a call counts itself here (`call`),
and a publisher task writes this process's counts (`llm_in_flight`, one statement)
about once a second while they change. The gateway reads the other processes' counts
with its routes (every ROUTE_TTL_S) and adds this process's live ones (`here`), so the
strategy `least_in_flight` sees all the load within a second or two, and this
process's own at once."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
import weakref
from collections.abc import Iterator
from typing import Any
from uuid import UUID

from agentplane.db.pool import Database
from agentplane.llm import store

log = logging.getLogger("agentplane.llm")
PROCESS = uuid.uuid4()
"""This process, as its rows name it."""
PUBLISH_EVERY_S = 1.0
HEARTBEAT_S = 3.0
"""Counts that did not change are written again this often: a row older than
store.IN_FLIGHT_FRESH_S is a process gone, and not counted."""

_counts: collections.Counter[tuple[UUID, UUID]] = collections.Counter()
_publishers: weakref.WeakKeyDictionary[Database, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def here(tenant_id: UUID, provider_id: UUID) -> int:
    return _counts[(tenant_id, provider_id)]


@contextlib.contextmanager
def call(db: Database, tenant_id: UUID, provider_id: UUID) -> Iterator[None]:
    """Count one call in flight while the block runs."""
    where = (tenant_id, provider_id)
    _counts[where] += 1
    _publisher(db)
    try:
        yield
    finally:
        _counts[where] -= 1
        if _counts[where] <= 0:
            del _counts[where]


def _publisher(db: Database) -> None:
    task = _publishers.get(db)
    if task is None or task.done():
        with contextlib.suppress(RuntimeError):  # no running loop: nothing to publish from
            _publishers[db] = asyncio.get_running_loop().create_task(_publish(db))


async def _publish(db: Database) -> None:
    """Write this process's counts while they change (and as a heartbeat while any is
    not zero); end once all are zero and written."""
    published: dict[tuple[UUID, UUID], int] = {}
    quiet = 0.0
    while True:
        await asyncio.sleep(PUBLISH_EVERY_S)
        now = dict(_counts)
        quiet += PUBLISH_EVERY_S
        if now == published and (not now or quiet < HEARTBEAT_S):
            if not now:
                return
            continue
        rows: list[dict[str, Any]] = [
            {"tenant_id": str(t), "provider_id": str(p), "calls": n} for (t, p), n in now.items()
        ]
        try:
            async with db.admin_connection() as conn:
                await store.publish_in_flight(conn, PROCESS, rows)
        except Exception as exc:  # routing goes on with what it has; tried again next time
            log.debug("calls in flight not published: %s", exc)
            if not now:  # nothing in flight: the rows left go stale and stop counting
                return
            continue
        published, quiet = now, 0.0
