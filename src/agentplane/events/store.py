"""SQL of the event log, and nothing else."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

CHANNEL = "agentplane_events"  # also named by events_append (events/sql/functions.sql)

# Notes on CHANNEL (space-separated head, then a body):
#   E <tenant> <run> <first> <last> <created_at> <JSON array of the events: type,
#     task_id, agent, message, payload; numbered first..last>  - the events themselves
#   A <tenant> <run> <first> <last>  - too many or too big to carry: read the table
#   D <JSON event>                   - an unstored llm.delta

# One round trip: events_append (events/sql/functions.sql) bumps the run's counter, inserts
# the batch numbered from it and queues one notification, carrying the events when they
# fit in one (under 8000 bytes). The batch arrives as ONE JSON array parsed by the server:
# psycopg dumps Python lists into arrays element by element in Python, which cost more
# than the insert itself.
APPEND = "SELECT events_append(%(tenant_id)s, %(run_id)s, %(n)s, %(rows)s::jsonb) AS last_seq"


async def append(
    conn: AsyncConnection[Any],
    *,
    tenant_id: UUID,
    run_id: UUID,
    n: int,
    rows: str,
) -> int | None:
    """Store a batch of n events given as a JSON array of objects with keys type,
    task_id, agent, message, payload (missing ones are null); the run's last sequence
    number after it, None if no such run."""
    cur = await conn.execute(
        APPEND, {"tenant_id": tenant_id, "run_id": run_id, "n": n, "rows": rows}
    )
    row = await cur.fetchone()
    return None if row is None else _first(row)


async def notify(conn: AsyncConnection[Any], payloads: list[str]) -> None:
    """Queue notifications (delivered on commit) carrying unstored events."""
    await conn.execute("SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", [CHANNEL, payloads])


COLUMNS = "run_id, seq, type, task_id, agent, message, payload, created_at"


async def read(
    conn: AsyncConnection[Any],
    *,
    tenant_id: UUID,
    run_id: UUID,
    after: int,
    limit: int,
    patterns: list[str] | None = None,
    upto: int | None = None,
) -> list[dict[str, Any]]:
    """Events of a run after `after` (and up to `upto`), in order; `patterns` are LIKE."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        f"""
        SELECT {COLUMNS} FROM events
        WHERE tenant_id = %(tenant_id)s AND run_id = %(run_id)s AND seq > %(after)s
          AND (%(upto)s::bigint IS NULL OR seq <= %(upto)s)
          AND (%(patterns)s::text[] IS NULL OR type LIKE ANY(%(patterns)s::text[]))
        ORDER BY seq LIMIT %(limit)s
        """,
        {
            "tenant_id": tenant_id,
            "run_id": run_id,
            "after": after,
            "upto": upto,
            "patterns": patterns,
            "limit": limit,
        },
    )
    return await cur.fetchall()


async def run_tenant(conn: AsyncConnection[Any], run_id: UUID) -> UUID | None:
    """The tenant of a run this connection can see, None if it sees no such run."""
    cur = await conn.execute("SELECT tenant_id FROM runs WHERE id = %s", [run_id])
    row = await cur.fetchone()
    return None if row is None else _first(row)


async def position(
    conn: AsyncConnection[Any], *, tenant_id: UUID, run_id: UUID, seq: int, terminal: list[str]
) -> tuple[int, bool]:
    """The run's last committed sequence number (0 before any event), and whether a
    terminal event has a sequence number up to `seq`."""
    cur = await conn.execute(
        """
        SELECT coalesce((SELECT last_seq FROM event_counters
                         WHERE tenant_id = %(t)s AND run_id = %(r)s), 0),
               EXISTS (SELECT 1 FROM events WHERE tenant_id = %(t)s AND run_id = %(r)s
                       AND seq <= %(seq)s AND type = ANY(%(terminal)s))
        """,
        {"t": tenant_id, "r": run_id, "seq": seq, "terminal": terminal},
    )
    row = await cur.fetchone()
    assert row is not None
    last, ended = row.values() if isinstance(row, dict) else row
    return int(last), bool(ended)


async def listen(conn: AsyncConnection[Any]) -> None:
    await conn.execute(f"LISTEN {CHANNEL}")


async def ensure_partitions(conn: AsyncConnection[Any], months: int) -> None:
    await conn.execute("SELECT events_ensure_partitions(%s)", [months])


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
