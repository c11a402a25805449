"""The event log's rules: append in the caller's transaction, read, follow live."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from operator import attrgetter
from typing import Any, Final
from uuid import UUID

from psycopg import AsyncConnection
from pydantic import TypeAdapter

from agentplane import clock
from agentplane.db.errors import translate_errors
from agentplane.db.pool import Database
from agentplane.errors import NotFound, ValidationFailed
from agentplane.events import store
from agentplane.events import types as t
from agentplane.events.models import Event, EventPage, NewEvent
from agentplane.events.stream import READ_BATCH, EventHub

__all__ = [
    "KEEPALIVE", "Event", "NewEvent", "append", "follow", "follow_batches", "follow_tenant",
    "history", "open_stream",
]

KEEPALIVE: Final = "keep-alive"
"""Yielded by followers when nothing happened for `keepalive` seconds."""

MAX_BATCH: Final = 10_000
# A NOTIFY payload is limited to 8000 bytes; bigger unstored deltas are stored instead.
MAX_NOTIFY: Final = 7900

_ROWS: Final = TypeAdapter(list[NewEvent])
_type_of: Final = attrgetter("type")


def _persist_deltas_default() -> bool:
    from agentplane.config import get_settings

    return get_settings().events_persist_llm_delta


async def append(
    conn: AsyncConnection[Any],
    *,
    tenant_id: UUID,
    run_id: UUID,
    events: Sequence[NewEvent],
    persist_llm_delta: bool | None = None,
) -> list[int]:
    """Append events to a run on the caller's transaction; return their sequence numbers.

    Nothing is committed here: the events become visible, and followers are woken,
    when the caller's transaction commits, and vanish with it if it rolls back.
    Writers of one run are serialised on its counter row until they commit, so keep
    the transaction short. `llm.delta` events are stored only when
    `persist_llm_delta` (default: the `events_persist_llm_delta` setting); otherwise
    they are streamed to live followers only, get no sequence number, and are left
    out of the returned list (which follows the order of the stored events).
    Raises NotFound if the run is not this tenant's. Nothing is stored after the run's
    terminal event (the database refuses it): then the list is empty, or stops there.
    """
    if not events:
        return []
    if len(events) > MAX_BATCH:
        raise ValidationFailed(f"at most {MAX_BATCH} events per append")
    if persist_llm_delta is None:
        persist_llm_delta = _persist_deltas_default()
    stored = list(events)
    live: list[str] = []
    if not persist_llm_delta and t.LLM_DELTA in map(_type_of, events):
        stored = []
        for event in events:
            if event.type == t.LLM_DELTA:
                note = _delta_note(tenant_id, run_id, event)
                if len(note.encode()) <= MAX_NOTIFY:
                    live.append(note)
                    continue
            stored.append(event)
    seqs: list[int] = []
    with translate_errors():
        if stored:
            # One call into pydantic's serializer for the whole batch: no dict per event.
            rows = _ROWS.dump_json(stored, exclude_none=True).decode()
            last = await store.append(
                conn, tenant_id=tenant_id, run_id=run_id, n=len(stored), rows=rows
            )
            if last is None:
                raise NotFound(f"run {run_id} not found")
            if last == 0:
                return []  # the run's log is closed: its terminal event is written
            # The database stores nothing after a terminal event: the batch stops there.
            kept = next(
                (i + 1 for i, e in enumerate(stored) if e.type in t.TERMINAL), len(stored)
            )
            seqs = list(range(last - kept + 1, last + 1))
        if live:
            await store.notify(conn, live)
    return seqs


def _delta_note(tenant_id: UUID, run_id: UUID, event: NewEvent) -> str:
    body = {
        "tenant_id": str(tenant_id),
        "run_id": str(run_id),
        "seq": None,
        "type": event.type,
        "task_id": str(event.task_id) if event.task_id else None,
        "agent": event.agent,
        "message": event.message,
        "payload": event.payload,
        "created_at": clock.now().isoformat(),
    }
    return "D " + json.dumps(body, separators=(",", ":"))


def type_patterns(types: Sequence[str] | None) -> list[str] | None:
    """`task.started` matches itself, `task.*` every task event; as LIKE patterns."""
    if not types:
        return None
    out = []
    for name in types:
        prefix = name[:-2] if name.endswith(".*") else name
        if not prefix or not all(part.isidentifier() for part in prefix.split(".")):
            raise ValidationFailed(f"not an event type or type.*: {name!r}")
        escaped = prefix.replace("\\", "\\\\").replace("_", "\\_").replace("%", "\\%")
        out.append(escaped + ".%" if name.endswith(".*") else escaped)
    return out


async def history(
    db: Database,
    *,
    tenant_id: UUID,
    run_id: UUID,
    after: int = 0,
    limit: int = 100,
    types: Sequence[str] | None = None,
    tail: int | None = None,
) -> EventPage:
    """A page of a run's stored events after sequence number `after`; with `tail`, the
    run's last `tail` events (numbers have no gaps, so they start at last - tail + 1)."""
    patterns = type_patterns(types)
    async with db.tenant_connection(tenant_id) as conn:
        if await store.run_tenant(conn, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        if tail is not None:
            last, _ = await store.position(conn, tenant_id=tenant_id, run_id=run_id, seq=0,
                                           terminal=sorted(t.TERMINAL))
            after, limit = max(after, last - tail), tail
        rows = await store.read(
            conn, tenant_id=tenant_id, run_id=run_id, after=after, limit=limit, patterns=patterns
        )
    events = [Event(**row) for row in rows]
    return EventPage(events=events, next_after=events[-1].seq if events else None)


async def run_tenant(db: Database, run_id: UUID) -> UUID:
    """The tenant of a run, looked up as the owner (operator paths such as the CLI)."""
    async with db.admin_connection() as conn:
        tenant_id = await store.run_tenant(conn, run_id)
    if tenant_id is None:
        raise NotFound(f"run {run_id} not found")
    return tenant_id


async def check_run(db: Database, *, tenant_id: UUID, run_id: UUID, after: int = 0) -> bool:
    """Whether the run has ended by sequence number `after` (a stream resumed after its
    terminal event is empty); NotFound if it is not this tenant's. A cursor beyond the
    run's last event is refused: no client saw it, and a stream resumed there would pass
    over every event up to it, the terminal one included, and never end."""
    async with db.tenant_connection(tenant_id) as conn:
        if await store.run_tenant(conn, run_id) is None:
            raise NotFound(f"run {run_id} not found")
        if after == 0:
            return False
        last, ended = await store.position(
            conn, tenant_id=tenant_id, run_id=run_id, seq=after, terminal=sorted(t.TERMINAL)
        )
    if after > last:
        raise ValidationFailed(
            f"cursor {after} is beyond the run's last event ({last})",
            errors=[{"field": "after", "message": "beyond the run's last event"}],
        )
    return ended


async def open_stream(
    db: Database,
    hub: EventHub,
    *,
    tenant_id: UUID,
    run_id: UUID,
    after: int = 0,
    keepalive: float = 15.0,
) -> AsyncIterator[list[Event] | str]:
    """`follow_batches` with the run checked now, so that NotFound comes before a
    response starts (one transaction for the check, not two)."""
    ended = await check_run(db, tenant_id=tenant_id, run_id=run_id, after=after)
    return _batches(db, hub, tenant_id=tenant_id, run_id=run_id, after=after,
                    keepalive=keepalive, ended=ended)


async def follow(
    db: Database,
    hub: EventHub,
    *,
    tenant_id: UUID,
    run_id: UUID,
    after: int = 0,
    keepalive: float = 15.0,
) -> AsyncIterator[Event | str]:
    """The run's events after `after`, then live ones, until the run's terminal event.

    Yields KEEPALIVE after `keepalive` quiet seconds (and re-reads the table then, in
    case a wake-up was lost). Unstored llm.delta events arrive with seq None.
    """
    async for batch in follow_batches(
        db, hub, tenant_id=tenant_id, run_id=run_id, after=after, keepalive=keepalive
    ):
        if isinstance(batch, str):
            yield batch
        else:
            for event in batch:
                yield event


async def follow_batches(
    db: Database,
    hub: EventHub,
    *,
    tenant_id: UUID,
    run_id: UUID,
    after: int = 0,
    keepalive: float = 15.0,
) -> AsyncIterator[list[Event] | str]:
    """`follow`, a list of events at a time (what one wake-up delivered)."""
    ended = await check_run(db, tenant_id=tenant_id, run_id=run_id, after=after)
    async for batch in _batches(db, hub, tenant_id=tenant_id, run_id=run_id, after=after,
                                keepalive=keepalive, ended=ended):
        yield batch


async def _batches(
    db: Database,
    hub: EventHub,
    *,
    tenant_id: UUID,
    run_id: UUID,
    after: int,
    keepalive: float,
    ended: bool,
) -> AsyncIterator[list[Event] | str]:
    if ended:
        return
    # Subscribe before the first read: an append committed in between is queued.
    async with hub.subscribe_run(tenant_id, run_id) as sub:
        last = after
        stale = True  # the table may hold events after `last` that no note will bring
        while True:
            sub.clear()
            out: list[Event] = []
            # Carried events continue the sequence: deliver them as they are. A number
            # beyond last + 1 means some were not carried; the table has them.
            while sub.events:
                event = sub.events.popleft()
                if event.seq is None:
                    out.append(event)
                elif event.seq == last + 1 and not stale:
                    out.append(event)
                    last = event.seq
                    if event.terminal:
                        yield out
                        return
                elif event.seq > last:
                    sub.announced = max(sub.announced, event.seq)
            if sub.announced > last:
                stale = True
            while stale:
                sub.announced = 0  # consumed; one arriving during the read re-arms it
                rows = await hub.read(tenant_id, run_id, last)
                for event in rows:
                    out.append(event)
                    last = event.seq or last
                    if event.terminal:
                        yield out
                        return
                # Stop at the first short read: every note up to here is in the table.
                stale = len(rows) == READ_BATCH
            if out:
                yield out
                continue
            if not await sub.wait(keepalive):
                yield KEEPALIVE
                stale = True


async def follow_tenant(
    db: Database, hub: EventHub, *, tenant_id: UUID, keepalive: float = 15.0
) -> AsyncIterator[Event | str]:
    """Run-level events (run.*) of every run of the tenant, live from now on.

    Not replayable as one stream: a dashboard that reconnects reads each run's
    history for what it missed.
    """
    seen: dict[UUID, int] = {}
    async with hub.subscribe_tenant(tenant_id) as sub:
        while True:
            if not await sub.wait(keepalive):
                yield KEEPALIVE
                continue
            sub.clear()
            while sub.notes:
                run_id, first, last, carried = sub.notes.popleft()
                after = seen.get(run_id, first - 1)
                if last <= after:
                    continue
                seen[run_id] = last
                if carried is not None and after >= first - 1:
                    events = [e for e in carried if e.seq and e.seq > after
                              and e.type.startswith(t.RUN_LEVEL_PREFIX)]
                else:  # not carried, or a note of this run was missed: the table has it
                    events = await hub.read_run_level(tenant_id, run_id, after, last)
                for event in events:
                    yield event
            if len(seen) > 10_000:  # forget the oldest runs; their notes carry spans
                for key in list(seen)[: len(seen) - 10_000]:
                    del seen[key]
