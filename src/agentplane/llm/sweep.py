"""The sweep of expired budget reservations, run by every process that reserves budgets: a
caller that died mid-call leaves its reservation behind, and the sweep gives it back (settled to
the use journaled for it, if any).

It runs on its own in two ways: in the background once per interval while the process
makes calls, and at once before a refusal is final (a dead caller's reservation must not be
what refuses a call). One sweep at a time per process; all tenants at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref

from agentplane.db.pool import Database
from agentplane.errors import AgentplaneError
from agentplane.usage.budgets import Budgets

log = logging.getLogger("agentplane.llm")
REFUSAL_GAP_S = 1.0


class Sweeper:
    def __init__(self, budgets: Budgets, interval: float) -> None:
        self.budgets = budgets
        self.interval = interval
        self.last = time.monotonic() - interval  # the first call sweeps
        self.running: asyncio.Task[int] | None = None

    def _idle(self) -> bool:
        if self.running is not None and (
            self.running.done() or self.running.get_loop() is not asyncio.get_running_loop()
        ):
            self.running = None  # ended, or left behind by a closed event loop
        return self.running is None

    def when_due(self) -> None:
        """Start a background sweep if the last one is older than the interval."""
        if self._idle() and time.monotonic() - self.last >= self.interval:
            self.running = asyncio.create_task(self._sweep(), name="budget-sweep")

    async def now(self) -> int:
        """Sweep (or join the sweep under way); the number of reservations given back. Within a
        second of the last sweep, none: reservations expire on a scale of seconds, and a burst of
        refused calls must not become a burst of sweeps."""
        if self._idle():
            if time.monotonic() - self.last < REFUSAL_GAP_S:
                return 0
            self.running = asyncio.create_task(self._sweep(), name="budget-sweep")
        return await asyncio.shield(self.running)

    async def _sweep(self) -> int:
        try:
            released = await self.budgets.release_expired()
            if released:
                log.info("released %d expired budget reservations", released)
            return released
        except AgentplaneError as exc:  # the next sweep tries again
            log.warning("budget sweep failed: %s", exc.detail)
            return 0
        finally:
            self.last = time.monotonic()
            self.running = None


_sweepers: weakref.WeakKeyDictionary[Database, Sweeper] = weakref.WeakKeyDictionary()


def sweeper_for(db: Database, budgets: Budgets, ttl_s: float) -> Sweeper:
    """The process's sweeper for this database (callers make an LLM per request): it
    sweeps a few times per reservation lifetime `ttl_s`, and at least once a minute."""
    found = _sweepers.get(db)
    if found is None:
        found = _sweepers[db] = Sweeper(budgets, max(1.0, min(60.0, ttl_s / 4)))
    return found
