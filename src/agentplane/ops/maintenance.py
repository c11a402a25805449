"""The installation's own maintenance, run by every worker without anyone scheduling it.

`system_tasks` holds each task's interval and next run. Every worker's
maintenance loop calls `run_due`: one statement claims the due tasks (so each due run
goes to exactly one worker) and says how long until the next is due, so the other ticks
cost nothing. Each task is one call of a SECURITY DEFINER function, its own transaction:
the worker's application role needs no owner credentials. The first call in a process
(a worker's first maintenance tick, within a second of its start) creates the coming
months' partitions whatever the schedule says, so a worker started after a long outage
makes the missing months at once; the API does the same when it starts (`at_start`).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agentplane.ops import store

log = logging.getLogger("agentplane.ops")
MONTHS_AHEAD = 3
# Checked at least this often even when nothing is due: an operator may shorten a task's
# interval (`agentplane ops tasks set`).
LONGEST_WAIT = 60.0


async def _partitions(conn: Any) -> Any:
    return {"partitions": await store.ensure_partitions(conn, MONTHS_AHEAD)}


async def _billing_periods(conn: Any) -> Any:
    return {"closed": await store.close_billing_periods(conn)}


async def _retention(conn: Any) -> Any:
    return await store.run_retention(conn)


async def _refresh_views(conn: Any) -> Any:
    return {"refreshed": await store.refresh_views(conn)}


async def _gateway_cache(conn: Any) -> Any:
    return {"expired": await store.expire_cached_answers(conn)}


TASKS = {
    "partitions": _partitions,
    "billing_periods": _billing_periods,
    "retention": _retention,
    "refresh_views": _refresh_views,
    "gateway_cache": _gateway_cache,
}

# Per database (a process may serve several): when to claim next, and whether this
# process has made the coming partitions there yet.
_next_check: dict[tuple[Any, ...], float] = {}


async def ensure_partitions(conn: Any) -> list[str]:
    """The current month and the next ones for every partitioned table (idempotent)."""
    async with conn.transaction():
        return await store.ensure_partitions(conn, MONTHS_AHEAD)


async def run_due(conn: Any) -> list[str]:
    """Run the system tasks due now on `conn` (any role); the names of those run. A
    task's failure is recorded on it (retried within minutes), never raised; connection
    errors are raised for the caller's retry."""
    where = (conn.info.host, conn.info.port, conn.info.dbname)
    try:
        if where not in _next_check:
            await ensure_partitions(conn)
            _next_check[where] = 0.0
        if time.monotonic() < _next_check[where]:
            return []
        async with conn.transaction():
            names, wait = await store.claim_tasks(conn)
    except Exception as exc:
        if conn.broken or conn.closed:
            raise
        log.warning("system tasks unavailable: %s", exc)
        _next_check[where] = time.monotonic() + LONGEST_WAIT
        return []
    _next_check[where] = time.monotonic() + min(wait, LONGEST_WAIT)
    for name in names:
        result, error = None, None
        try:
            async with conn.transaction():
                result = await TASKS[name](conn)
        except Exception as exc:  # recorded on the task, shown by `agentplane ops tasks`
            if conn.broken or conn.closed:
                raise
            error = f"{type(exc).__name__}: {str(exc).strip()}"
            log.warning("system task %s failed: %s", name, error)
        async with conn.transaction():
            await store.finish_task(conn, name, result, error)
        if error:
            _next_check[where] = 0.0
    return names


async def at_start(db: Any) -> None:
    """At API start: the coming months' partitions, before the first LLM call writes."""
    async with db.app_connection() as conn:
        await ensure_partitions(conn)
