"""The event log as writers and followers use it: numbering, transactions, isolation."""

from __future__ import annotations

import asyncio
import json
import random
from datetime import UTC, datetime
from uuid import uuid4

import psycopg
import pydantic
import pytest

from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database
from agentplane.errors import NotFound
from agentplane.events import NewEvent, append, service, store
from agentplane.events import types as t
from agentplane.events.stream import EventHub
from tests.conftest import TEMPLATE, create_database, drop_database, make_settings, make_tenant
from tests.db.test_migrations import schema_dump
from tests.events.helpers import emit, eventually, make_run


class Boom(Exception):
    pass


async def stored(db: Database, tenant_id, run_id) -> list[tuple[int, str]]:
    page = await service.history(db, tenant_id=tenant_id, run_id=run_id, limit=1000)
    return [(e.seq, e.type) for e in page.events]


async def test_append_numbers_each_run_from_one(db: Database) -> None:
    tenant = await make_tenant(db)
    run, other = await make_run(db, tenant.tenant_id), await make_run(db, tenant.tenant_id)
    task = uuid4()
    async with db.tenant_connection(tenant.tenant_id) as conn:
        first = await append(
            conn,
            tenant_id=tenant.tenant_id,
            run_id=run,
            events=[
                NewEvent(type=t.RUN_STARTED),
                NewEvent(type=t.TASK_STARTED, task_id=task, agent="planner", message="go",
                         payload={"attempt": 1, "nested": {"x": [1, 2]}}),
            ],
        )
        assert await append(conn, tenant_id=tenant.tenant_id, run_id=run, events=[]) == []
    assert first == [1, 2]
    assert await emit(db, tenant.tenant_id, run, t.TASK_COMPLETED) == [3]
    assert await emit(db, tenant.tenant_id, other, t.RUN_STARTED) == [1]

    page = await service.history(db, tenant_id=tenant.tenant_id, run_id=run)
    assert [(e.seq, e.type) for e in page.events] == [
        (1, t.RUN_STARTED), (2, t.TASK_STARTED), (3, t.TASK_COMPLETED)
    ]
    event = page.events[1]
    assert (event.task_id, event.agent, event.message) == (task, "planner", "go")
    assert event.payload == {"attempt": 1, "nested": {"x": [1, 2]}}
    assert abs((event.created_at - datetime.now(UTC)).total_seconds()) < 60
    assert page.next_after == 3
    later = await service.history(db, tenant_id=tenant.tenant_id, run_id=run, after=1, limit=1,
                                  types=["task.*"])
    assert [(e.seq, e.type) for e in later.events] == [(2, t.TASK_STARTED)]


async def test_twenty_concurrent_writers_get_gapless_unique_numbers(db: Database) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    rng = random.Random(7)
    committed: list[list[int]] = []

    async def writer(n: int) -> None:
        for i in range(8):
            size = rng.randint(1, 5)
            events = [NewEvent(type=t.AGENT_THINKING, agent=f"w{n}", payload={"i": i})] * size
            rollback = rng.random() < 0.25
            try:
                async with db.tenant_connection(tenant.tenant_id) as conn:
                    seqs = await append(conn, tenant_id=tenant.tenant_id, run_id=run,
                                        events=events)
                    assert seqs == list(range(seqs[0], seqs[0] + size))
                    await asyncio.sleep(0)  # let other writers queue on the counter
                    if rollback:
                        raise Boom
            except Boom:
                continue
            committed.append(seqs)

    await asyncio.gather(*(writer(n) for n in range(20)))
    numbers = sorted(s for batch in committed for s in batch)
    assert len(committed) > 80
    assert numbers == list(range(1, len(numbers) + 1)), "committed numbers are gapless"
    assert [seq for seq, _ in await stored(db, tenant.tenant_id, run)] == numbers


async def test_rollback_leaves_no_event_and_wakes_no_follower(db: Database) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    hub = EventHub(db)
    received: list[object] = []

    async def follower() -> None:
        async for item in service.follow(db, hub, tenant_id=tenant.tenant_id, run_id=run,
                                         keepalive=30):
            received.append(item)

    listener = await psycopg.AsyncConnection.connect(db.endpoints.app, autocommit=True)
    try:
        await store.listen(listener)
        following = asyncio.create_task(follower())
        await hub.start()
        with pytest.raises(Boom):
            async with db.tenant_connection(tenant.tenant_id) as conn:
                await append(conn, tenant_id=tenant.tenant_id, run_id=run,
                             events=[NewEvent(type=t.TASK_STARTED, message="phantom")])
                raise Boom
        notes: list[str] = []

        async def collect() -> None:
            async for note in listener.notifies():
                notes.append(note.payload)

        collecting = asyncio.create_task(collect())
        await asyncio.sleep(0.3)
        assert notes == [], "a rolled-back append notifies nobody"
        assert received == []
        assert await stored(db, tenant.tenant_id, run) == []

        # The rolled-back number is given back: the next event is 1, and it ends the stream.
        assert await emit(db, tenant.tenant_id, run, t.RUN_COMPLETED) == [1]
        async with asyncio.timeout(5):
            await following
        assert [(e.seq, e.type, e.message) for e in received] == [(1, t.RUN_COMPLETED, None)]
        await eventually(lambda: bool(notes))
        assert len(notes) == 1
        head, carried = notes[0].split(" [", 1)
        *numbers, at = head.split(" ")
        assert numbers == ["E", str(tenant.tenant_id), str(run), "1", "1"], "the committed event"
        page = await service.history(db, tenant_id=tenant.tenant_id, run_id=run, limit=10)
        assert datetime.fromisoformat(at) == page.events[0].created_at, "the stored time"
        assert [e["type"] for e in json.loads("[" + carried)] == [t.RUN_COMPLETED]
        collecting.cancel()
    finally:
        await listener.close()
        await hub.stop()


async def test_unknown_and_foreign_runs_are_not_found(db: Database) -> None:
    mine, theirs = await make_tenant(db), await make_tenant(db)
    their_run = await make_run(db, theirs.tenant_id)
    for tenant_id, run_id in [(mine.tenant_id, uuid4()), (mine.tenant_id, their_run)]:
        with pytest.raises(NotFound):
            await emit(db, tenant_id, run_id, t.RUN_STARTED)
        with pytest.raises(NotFound):
            await service.history(db, tenant_id=tenant_id, run_id=run_id)
    # Naming the other tenant while connected as mine: RLS refuses the write.
    with pytest.raises(NotFound):
        async with db.tenant_connection(mine.tenant_id) as conn:
            await append(conn, tenant_id=theirs.tenant_id, run_id=their_run,
                         events=[NewEvent(type=t.RUN_STARTED)])
    assert await stored(db, theirs.tenant_id, their_run) == []
    assert await emit(db, theirs.tenant_id, their_run, t.RUN_STARTED) == [1]


async def test_llm_delta_is_streamed_and_stored_only_when_configured(db: Database) -> None:
    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    hub = EventHub(db)
    received: list[object] = []

    async def follower() -> None:
        async for item in service.follow(db, hub, tenant_id=tenant.tenant_id, run_id=run,
                                         keepalive=30):
            received.append(item)

    following = asyncio.create_task(follower())
    try:
        await hub.start()
        await asyncio.sleep(0.1)
        async with db.tenant_connection(tenant.tenant_id) as conn:
            seqs = await append(
                conn, tenant_id=tenant.tenant_id, run_id=run,
                events=[NewEvent(type=t.LLM_CALL_STARTED),
                        NewEvent(type=t.LLM_DELTA, message="Hel"),
                        NewEvent(type=t.LLM_DELTA, message="lo")],
                persist_llm_delta=False,
            )
        assert seqs == [1]
        assert await emit(db, tenant.tenant_id, run, t.LLM_DELTA, persist_llm_delta=True) == [2]
        await emit(db, tenant.tenant_id, run, t.RUN_COMPLETED)
        async with asyncio.timeout(5):
            await following
    finally:
        following.cancel()
        await hub.stop()
    # Stored events arrive in sequence order; unstored deltas arrive in their own order
    # but, having no sequence number, are not ordered against stored events.
    assert [(e.seq, e.type) for e in received if e.seq is not None] == [
        (1, t.LLM_CALL_STARTED), (2, t.LLM_DELTA), (3, t.RUN_COMPLETED),
    ]
    assert [(e.type, e.message) for e in received if e.seq is None] == [
        (t.LLM_DELTA, "Hel"), (t.LLM_DELTA, "lo"),
    ]
    assert await stored(db, tenant.tenant_id, run) == [
        (1, t.LLM_CALL_STARTED), (2, t.LLM_DELTA), (3, t.RUN_COMPLETED)
    ]


async def test_partitions_are_readable_only_through_the_parent(db: Database) -> None:
    a, b = await make_tenant(db), await make_tenant(db)
    run_a, run_b = await make_run(db, a.tenant_id), await make_run(db, b.tenant_id)
    await emit(db, a.tenant_id, run_a, t.RUN_STARTED, t.RUN_COMPLETED)
    await emit(db, b.tenant_id, run_b, t.RUN_STARTED)
    async with db.admin_connection() as conn:  # the month the events went to
        cur = await conn.execute("SELECT tableoid::regclass::text AS p FROM events "
                                 "WHERE run_id = %s LIMIT 1", [run_a])
        partition = (await cur.fetchone())["p"]

    async with db.tenant_connection(a.tenant_id) as conn:
        cur = await conn.execute("SELECT DISTINCT tenant_id FROM events")
        assert [r["tenant_id"] for r in await cur.fetchall()] == [a.tenant_id]
    async with db.app_connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM events")
        assert (await cur.fetchone())["n"] == 0
    async with await psycopg.AsyncConnection.connect(db.endpoints.app) as raw:
        await raw.execute("SELECT set_config('app.tenant_id', %s, false)", [str(a.tenant_id)])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            await raw.execute(f"SELECT * FROM {partition}")
        await raw.rollback()
        # Future months: created on demand by the app, and no more readable than these.
        await raw.execute("SELECT events_ensure_partitions(14)")
        cur = await raw.execute(
            "SELECT count(*), bool_or(has_table_privilege(current_user, c.oid, 'SELECT')) "
            "FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'events'::regclass"
        )
        count, readable = await cur.fetchone()
        assert count >= 15 and readable is False


def test_event_types_are_checked() -> None:
    for bad in ["Run.Started", "started", "run.", "run..x", "run started", "x" * 101 + ".y"]:
        with pytest.raises(pydantic.ValidationError):
            NewEvent(type=bad)
    assert t.TERMINAL < t.ALL
    assert all(NewEvent(type=name).type == name for name in t.ALL)


def test_migration_0007_steps_down_and_up_to_the_same_schema(pg_server, pg_home, pg_port) -> None:
    name = "t_events_migration"
    create_database(pg_server, name, TEMPLATE)
    try:
        owner = make_settings(pg_home, pg_port, name)
        from agentplane.db import endpoints as ep

        endpoints = ep.resolve(owner, start=False)
        migrator = Migrator(endpoints.owner, owner.app_role)
        before = schema_dump(endpoints.owner)
        assert "PARTITION BY RANGE (created_at)" in before
        migrator.downgrade("0006")
        down = schema_dump(endpoints.owner)
        assert "CREATE TABLE public.events " not in down
        assert "event_counters" not in down and "events_ensure_partitions" not in down
        migrator.upgrade()
        assert schema_dump(endpoints.owner) == before
    finally:
        drop_database(pg_server, name)


async def test_the_setting_decides_whether_llm_delta_is_stored(db: Database, monkeypatch) -> None:
    from agentplane.config import get_settings

    tenant = await make_tenant(db)
    run = await make_run(db, tenant.tenant_id)
    try:
        for value, expected in (("false", []), ("true", [1])):
            monkeypatch.setenv("AGENTPLANE_EVENTS_PERSIST_LLM_DELTA", value)
            get_settings.cache_clear()
            assert await emit(db, tenant.tenant_id, run, t.LLM_DELTA) == expected
    finally:
        get_settings.cache_clear()
    assert await stored(db, tenant.tenant_id, run) == [(1, t.LLM_DELTA)]
