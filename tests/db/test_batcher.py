"""Group commit (db/batcher.py) on its own: what arrives
while a key's writes are all in flight (`writers` of them) goes together in the next
write; each submitter gets its own item's result or error; a cancelled item is not
written; `limit` caps a write; keys are written apart."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from uuid import UUID

import pytest

from agentplane.db.batcher import Batcher

TENANT, OTHER = uuid.uuid4(), uuid.uuid4()


class Bad(Exception):
    """What the write raises for an item it cannot write."""


class Writes:
    """A write function that records each batch it is given and, while `hold` is set
    for the key, waits before it returns (the write is in flight)."""

    def __init__(self, bad: frozenset[Any] = frozenset(), stop: frozenset[Any] = frozenset()):
        self.batches: list[tuple[UUID, list[Any]]] = []
        self.bad = bad
        self.stop = stop
        self.gates: dict[UUID, asyncio.Event] = {}
        self.entered = asyncio.Event()
        self.active = 0
        self.peak = 0
        """Writes in flight at once: now, and at most."""

    def hold(self, key: UUID) -> asyncio.Event:
        self.gates[key] = asyncio.Event()
        return self.gates[key]

    async def write(self, key: UUID, items: list[Any]) -> list[str]:
        self.batches.append((key, list(items)))
        self.entered.set()
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if key in self.gates:
                await self.gates[key].wait()
        finally:
            self.active -= 1
        if self.stop & set(items):
            raise asyncio.CancelledError  # as when the worker is stopped mid-write
        if self.bad & set(items):
            raise Bad(f"cannot write {sorted(self.bad & set(items))}")
        return [f"{key}:{item}" for item in items]

    def sizes(self, key: UUID = TENANT) -> list[int]:
        return [len(items) for k, items in self.batches if k == key]

    def items(self, key: UUID = TENANT) -> list[list[Any]]:
        return [items for k, items in self.batches if k == key]


async def in_flight(writes: Writes) -> None:
    """Until the write function has been entered (its batch started)."""
    await asyncio.wait_for(writes.entered.wait(), 5)
    writes.entered.clear()


async def turns(n: int = 5) -> None:
    """Let the submitters that were just created reach their await."""
    for _ in range(n):
        await asyncio.sleep(0)


def result(item: Any, key: UUID = TENANT) -> str:
    return f"{key}:{item}"


async def test_submits_during_a_write_go_together_in_the_next_write() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes.write, writers=1)
    gate = writes.hold(TENANT)
    first = asyncio.create_task(batcher.submit(TENANT, 0))
    await in_flight(writes)
    rest = [asyncio.create_task(batcher.submit(TENANT, i)) for i in range(1, 10)]
    await turns()
    assert writes.sizes() == [1]  # the others wait for the write in flight
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    assert writes.sizes() == [1, 9]
    assert writes.items() == [[0], list(range(1, 10))]
    # Each submitter has its own item's result, not a neighbour's.
    assert results == [result(i) for i in range(10)]


async def test_a_lone_submitter_is_written_at_once_without_waiting_for_company() -> None:
    writes = Writes()
    batcher: Batcher[str, str] = Batcher(writes.write)
    assert await asyncio.wait_for(batcher.submit(TENANT, "only"), 5) == result("only")
    assert await asyncio.wait_for(batcher.submit(TENANT, "next"), 5) == result("next")
    assert writes.items() == [["only"], ["next"]]


async def test_a_failing_batch_is_retried_item_by_item_and_only_the_bad_item_fails() -> None:
    writes = Writes(bad=frozenset({3}))
    batcher: Batcher[int, str] = Batcher(writes.write)
    outcomes = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(TENANT, i) for i in range(6)), return_exceptions=True),
        5,
    )
    # One batch of all six (submitted before the write began), then each alone.
    assert writes.items() == [list(range(6)), [0], [1], [2], [3], [4], [5]]
    assert isinstance(outcomes[3], Bad) and "[3]" in str(outcomes[3])
    assert [o for i, o in enumerate(outcomes) if i != 3] == [result(i) for i in range(6) if i != 3]


async def test_a_failing_write_of_one_item_fails_that_submitter_only_once() -> None:
    writes = Writes(bad=frozenset({"bad"}))
    batcher: Batcher[str, str] = Batcher(writes.write)
    with pytest.raises(Bad):
        await asyncio.wait_for(batcher.submit(TENANT, "bad"), 5)
    assert writes.items() == [["bad"]]  # not retried: it was alone
    assert await asyncio.wait_for(batcher.submit(TENANT, "good"), 5) == result("good")


async def test_an_item_cancelled_before_its_batch_starts_is_not_written() -> None:
    writes = Writes()
    batcher: Batcher[str, str] = Batcher(writes.write, writers=1)
    gate = writes.hold(TENANT)
    first = asyncio.create_task(batcher.submit(TENANT, "first"))
    await in_flight(writes)
    waiting = {n: asyncio.create_task(batcher.submit(TENANT, n)) for n in ("a", "b", "c")}
    await turns()
    waiting["b"].cancel()
    await turns()
    gate.set()
    assert await asyncio.wait_for(first, 5) == result("first")
    assert await asyncio.wait_for(waiting["a"], 5) == result("a")
    assert await asyncio.wait_for(waiting["c"], 5) == result("c")
    assert waiting["b"].cancelled()
    assert writes.items() == [["first"], ["a", "c"]]


async def test_a_submitter_cancelled_after_its_batch_started_does_not_stop_the_write() -> None:
    writes = Writes()
    batcher: Batcher[str, str] = Batcher(writes.write)
    gate = writes.hold(TENANT)
    first = asyncio.create_task(batcher.submit(TENANT, "first"))
    await in_flight(writes)
    second = asyncio.create_task(batcher.submit(TENANT, "second"))
    await turns()
    first.cancel()  # its write is in flight: it stands, and the others still go
    gate.set()
    assert await asyncio.wait_for(second, 5) == result("second")
    assert first.cancelled()
    assert writes.items() == [["first"], ["second"]]


async def test_limit_splits_a_backlog_into_writes_of_at_most_limit_items() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes.write, limit=3, writers=1)
    gate = writes.hold(TENANT)
    first = asyncio.create_task(batcher.submit(TENANT, 0))
    await in_flight(writes)
    rest = [asyncio.create_task(batcher.submit(TENANT, i)) for i in range(1, 8)]
    await turns()
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *rest), 5)
    # In the order submitted, none left behind, none written twice.
    assert writes.items() == [[0], [1, 2, 3], [4, 5, 6], [7]]
    assert results == [result(i) for i in range(8)]


async def test_keys_are_batched_apart_and_do_not_wait_for_each_other() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes.write)
    gate = writes.hold(TENANT)
    held = [asyncio.create_task(batcher.submit(TENANT, i)) for i in range(3)]
    await in_flight(writes)
    # The other tenant's items are written while the first tenant's write is in flight.
    other = await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(OTHER, i) for i in range(3, 5))), 5
    )
    assert other == [result(3, OTHER), result(4, OTHER)]
    assert not any(t.done() for t in held)
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*held), 5) == [result(i) for i in range(3)]
    assert writes.items(TENANT) == [[0, 1, 2]]
    assert writes.items(OTHER) == [[3, 4]]


async def test_an_interrupted_write_fails_its_batch_and_the_waiting_items_then_recovers() -> None:
    writes = Writes(stop=frozenset({"stop"}))
    batcher: Batcher[str, str] = Batcher(writes.write, writers=1)
    gate = writes.hold(TENANT)
    stopped = asyncio.create_task(batcher.submit(TENANT, "stop"))
    await in_flight(writes)
    waiting = asyncio.create_task(batcher.submit(TENANT, "waiting"))
    await turns()
    gate.set()
    # No one waits forever: both are told the write was interrupted.
    for task in (stopped, waiting):
        with pytest.raises(RuntimeError, match="interrupted"):
            await asyncio.wait_for(task, 5)
    assert writes.items() == [["stop"]]  # the waiting item was never written
    writes.gates.clear()
    assert await asyncio.wait_for(batcher.submit(TENANT, "later"), 5) == result("later")


async def test_with_two_writers_a_second_write_goes_while_one_is_in_flight() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes.write, writers=2)
    gate = writes.hold(TENANT)
    first = asyncio.create_task(batcher.submit(TENANT, 0))
    await in_flight(writes)
    second = asyncio.create_task(batcher.submit(TENANT, 1))
    await in_flight(writes)  # not waiting for the first write to end
    rest = [asyncio.create_task(batcher.submit(TENANT, i)) for i in range(2, 10)]
    await turns()
    assert writes.items() == [[0], [1]]  # both writers busy: the rest wait, together
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, second, *rest), 5)
    assert writes.items() == [[0], [1], list(range(2, 10))]
    assert results == [result(i) for i in range(10)]
    assert writes.peak == 2


async def test_writers_and_limit_write_a_backlog_once_each_with_writers_in_flight_at_most() -> None:
    writes = Writes()
    batcher: Batcher[int, str] = Batcher(writes.write, limit=4, writers=3)
    gate = writes.hold(TENANT)
    first = asyncio.create_task(batcher.submit(TENANT, 0))
    await in_flight(writes)
    backlog = [asyncio.create_task(batcher.submit(TENANT, i)) for i in range(1, 40)]
    await turns()
    assert writes.sizes() == [1, 4, 4]  # the other two writers take what they may
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(first, *backlog), 5)
    assert results == [result(i) for i in range(40)]
    written = [i for items in writes.items() for i in items]
    assert sorted(written) == list(range(40))  # each item once
    assert max(writes.sizes()) == 4 and writes.peak == 3
