"""Group commit: what callers submit for a key (a tenant) while its writes in flight
(WRITERS at most) are busy waits for one to end, then goes in its next write, all
together. A caller alone is written at once, on its own; busy callers share writes, so
per-transaction costs (round trips, commit, locks on hot rows) are paid once per batch.
No timer: nothing waits for company that is not already waiting. The runtime starts and
finishes tasks this way, and budgets take their reservations so."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar
from uuid import UUID

Item = TypeVar("Item")
Result = TypeVar("Result")
LIMIT = 64
WRITERS = 2
"""Writes of one key in flight at once: a write keeps one server process busy, so with
one at a time a busy tenant could use one core of the database and no more."""
log = logging.getLogger("agentplane.db")


class Batcher(Generic[Item, Result]):
    def __init__(
        self,
        write: Callable[[UUID, list[Item]], Awaitable[list[Result]]],
        limit: int = LIMIT,
        writers: int = WRITERS,
    ) -> None:
        self._write = write
        self._limit = limit
        self._writers = writers
        self._waiting: dict[UUID, list[tuple[Item, asyncio.Future[Result]]]] = {}
        self._drains: dict[UUID, set[asyncio.Task[None]]] = {}

    async def submit(self, key: UUID, item: Item) -> Result:
        """The item's result once its batch has committed; the batch's error if it
        failed with the item alone in it. Cancelled before its batch starts, the item
        is not written."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((item, future))
        drains = self._drains.setdefault(key, set())
        if len(drains) < self._writers:
            drains.add(asyncio.create_task(self._drain(key)))
        return await future

    async def _drain(self, key: UUID) -> None:
        batch: list[tuple[Item, asyncio.Future[Result]]] = []
        try:
            while waiting := [(i, f) for i, f in self._waiting.pop(key, []) if not f.done()]:
                batch, rest = waiting[: self._limit], waiting[self._limit :]
                if rest:
                    self._waiting[key] = rest + self._waiting.get(key, [])
                await self._write_batch(key, batch)
                batch = []
        except BaseException as exc:
            # Interrupted (the worker is stopping): nothing of this batch committed, and
            # no one may wait forever for the rest, unless another writer takes them.
            alone = self._drains[key] == {asyncio.current_task()}
            for _, future in batch + (self._waiting.pop(key, []) if alone else []):
                if not future.done():
                    future.set_exception(RuntimeError(f"the write was interrupted: {exc!r}"))
            raise
        finally:
            drains = self._drains[key]
            drains.discard(asyncio.current_task())  # type: ignore[arg-type]
            if not drains:
                del self._drains[key]

    async def _write_batch(
        self, key: UUID, batch: list[tuple[Item, asyncio.Future[Result]]]
    ) -> None:
        try:
            results = await self._write(key, [item for item, _ in batch])
        except Exception as exc:
            if len(batch) == 1:  # its caller gets the error, and says what it means
                _settle(batch[0][1], exc=exc)
                return
            log.warning("a write of %d items failed, writing each alone: %r", len(batch), exc)
            # One item may be what failed (or the batch met a deadlock): each on its own,
            # so that the others still commit.
            for item, future in batch:
                try:
                    (result,) = await self._write(key, [item])
                except Exception as alone:
                    _settle(future, exc=alone)
                else:
                    _settle(future, result)
            return
        for (_, future), result in zip(batch, results, strict=True):
            _settle(future, result)


def _settle(
    future: asyncio.Future[Result], result: Result | None = None, *, exc: Exception | None = None
) -> None:
    if future.done():  # its submitter was cancelled; the write stands
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)  # type: ignore[arg-type]
