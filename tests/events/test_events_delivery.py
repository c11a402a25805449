"""Live delivery: events carried by notifications, the table read only on a gap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

from agentplane.db.pool import Database
from agentplane.events import Event, NewEvent, append, service, store
from agentplane.events import types as t
from agentplane.events.stream import EventHub
from tests.conftest import make_tenant
from tests.events.helpers import emit, eventually, make_run


class Following:
    """A follower of one run in a task, with the hub's table reads and notes counted."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.reads = 0
        self.notes: list[str] = []

    @property
    def seqs(self) -> list[int | None]:
        return [e.seq for e in self.events]


@asynccontextmanager
async def following(
    db: Database, tenant_id: UUID, run_id: UUID, drop: Callable[[str], bool] = lambda _: False
) -> AsyncIterator[Following]:
    """Follow from the start; notes for which `drop` is true are lost on the way."""
    hub = EventHub(db)
    seen = Following()
    read, dispatch = hub.read, hub.dispatch

    async def counted_read(*args: Any) -> list[Event]:
        # Counted once done: a read counted when it starts may still see a later commit.
        rows = await read(*args)
        seen.reads += 1
        return rows

    def lossy_dispatch(payload: str) -> None:
        seen.notes.append(payload)
        if not drop(payload):
            dispatch(payload)

    hub.read = counted_read  # type: ignore[method-assign]
    hub.dispatch = lossy_dispatch  # type: ignore[method-assign]

    async def follow() -> None:
        async for item in service.follow(db, hub, tenant_id=tenant_id, run_id=run_id,
                                         keepalive=30):
            if isinstance(item, Event):
                seen.events.append(item)

    task = asyncio.create_task(follow())
    try:
        await hub.start()
        await eventually(lambda: seen.reads == 1)  # the initial catch-up read
        yield seen
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.stop()


async def test_small_batches_arrive_in_the_note_without_reading_the_table(db: Database) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    async with following(db, tenant.tenant_id, run) as seen:
        for _ in range(3):
            await emit(db, tenant.tenant_id, run, t.TASK_STARTED, t.AGENT_THINKING)
        async with db.tenant_connection(tenant.tenant_id) as conn:
            await append(conn, tenant_id=tenant.tenant_id, run_id=run, events=[NewEvent(
                type=t.AGENT_OUTPUT, task_id=uuid4(), agent="kenji", message="two\nlines ü",
                payload={"zeta": 1.5, "a": [1, {"b": "é\n\"q\""}], "mid": None, "": {}},
            )])
        await eventually(lambda: len(seen.events) == 7)
        assert seen.seqs == [1, 2, 3, 4, 5, 6, 7]
        assert seen.reads == 1, "carried events need no read"
        assert all(note.startswith("E ") for note in seen.notes)
        # Carried and read from the table, an event is the same bytes.
        page = await service.history(db, tenant_id=tenant.tenant_id, run_id=run)
        assert [e.encoded for e in page.events] == [e.encoded for e in seen.events]


async def test_a_lost_note_is_seen_as_a_gap_and_read_from_the_table(db: Database) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    lost: list[str] = []

    def drop_first(note: str) -> bool:
        if not lost:
            lost.append(note)
            return True
        return False

    async with following(db, tenant.tenant_id, run, drop=drop_first) as seen:
        await emit(db, tenant.tenant_id, run, t.TASK_STARTED, t.AGENT_THINKING)
        await eventually(lambda: bool(lost))
        assert seen.events == [], "no note, no delivery yet"
        await emit(db, tenant.tenant_id, run, t.TASK_COMPLETED)
        await eventually(lambda: len(seen.events) == 3)
        await asyncio.sleep(0.1)
        assert seen.seqs == [1, 2, 3], "gapless, in order, each once"
        assert seen.reads == 2


async def test_oversized_and_large_batches_are_announced_then_read(db: Database) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    async with following(db, tenant.tenant_id, run) as seen:
        async with db.tenant_connection(tenant.tenant_id) as conn:
            await append(conn, tenant_id=tenant.tenant_id, run_id=run,
                         events=[NewEvent(type=t.AGENT_THINKING, message="x" * 9000)])
        await eventually(lambda: len(seen.events) == 1)
        assert seen.events[0].message == "x" * 9000
        await emit(db, tenant.tenant_id, run, *[t.AGENT_THINKING] * 100)
        await emit(db, tenant.tenant_id, run, t.RUN_COMPLETED)
        await eventually(lambda: len(seen.events) == 102)
        assert seen.seqs == list(range(1, 103))
        kinds = [note.split(" ", 1)[0] for note in seen.notes]
        assert kinds == ["A", "A", "E"], "too big, too many, carried"
        assert seen.reads == 3


async def test_tenant_stream_takes_carried_events_and_reads_only_announced_ones(
    db: Database,
) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    hub = EventHub(db)
    reads: list[tuple[int, int]] = []
    read = hub.read_run_level

    async def counted(tenant_id: UUID, run_id: UUID, after: int, upto: int) -> list[Event]:
        reads.append((after, upto))
        return await read(tenant_id, run_id, after, upto)

    hub.read_run_level = counted  # type: ignore[method-assign]
    got: list[Event] = []

    async def follow() -> None:
        async for item in service.follow_tenant(db, hub, tenant_id=tenant.tenant_id,
                                                keepalive=30):
            if isinstance(item, Event):
                got.append(item)

    task = asyncio.create_task(follow())
    try:
        await hub.start()
        await eventually(lambda: hub.tenant_subscribers == 1)
        await emit(db, tenant.tenant_id, run, t.RUN_STARTED, t.TASK_STARTED)
        await eventually(lambda: len(got) == 1)
        assert reads == [], "a carried run-level event needs no read"
        async with db.tenant_connection(tenant.tenant_id) as conn:  # too big to carry
            await append(conn, tenant_id=tenant.tenant_id, run_id=run,
                         events=[NewEvent(type=t.RUN_PAUSED, message="x" * 9000)])
        await emit(db, tenant.tenant_id, run, t.TASK_COMPLETED, t.RUN_COMPLETED)
        await eventually(lambda: len(got) == 3)
        await asyncio.sleep(0.1)
        assert [(e.type, e.seq) for e in got] == [
            (t.RUN_STARTED, 1), (t.RUN_PAUSED, 3), (t.RUN_COMPLETED, 5)
        ]
        assert reads == [(2, 3)], "only the announced span is read"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await hub.stop()


async def test_a_malformed_note_is_ignored_and_delivery_goes_on(db: Database) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    async with following(db, tenant.tenant_id, run) as seen:
        async with db.tenant_connection(tenant.tenant_id) as conn:
            for junk in ["E not-a-uuid x 1 2 []", f"E {tenant.tenant_id} {run} 1 1 [{{", "D {}",
                         "Z what"]:
                await conn.execute("SELECT pg_notify(%s, %s)", [store.CHANNEL, junk])
        await eventually(lambda: len(seen.notes) == 4)
        await emit(db, tenant.tenant_id, run, t.TASK_STARTED, t.RUN_COMPLETED)
        await eventually(lambda: len(seen.events) == 2)
        assert seen.seqs == [1, 2]
