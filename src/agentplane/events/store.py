"""SQL of the event log, and nothing else."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

CHANNEL = "agentplane_events"

# Notes on CHANNEL (space-separated head, then a body):
#   E <tenant> <run> <first> <last> <JSON array of the events>  - the events themselves
#   A <tenant> <run> <first> <last>  - too many or too big to carry: read the table
#   D <JSON event>                   - an unstored llm.delta
NOTE_MAX = 7900  # PostgreSQL refuses payloads of 8000 bytes or more
CARRY_MAX = 64  # bigger batches never fit; don't build their JSON at all

# One round trip: bump the run's counter (which serialises writers of the run and
# checks that the run exists in this tenant), insert the batch numbered from it, and
# queue one notification, delivered only if the caller's transaction commits. The
# batch arrives as ONE JSON array parsed by the server: psycopg dumps Python lists
# into arrays element by element in Python, which cost more than the insert itself.
# Parsed as jsonb, not json: each payload is then taken out already in binary form,
# where json would parse it a second time into the jsonb column. An event's number
# is its place in the array (WITH ORDINALITY). The note carries the stored events
# when they fit (`now()` is the transaction's timestamp, hence the rows' created_at).
APPEND = f"""
WITH counter AS (
    INSERT INTO event_counters AS c (tenant_id, run_id, last_seq)
    SELECT r.tenant_id, r.id, %(n)s FROM runs r
    WHERE r.id = %(run_id)s AND r.tenant_id = %(tenant_id)s
    ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
    RETURNING c.tenant_id, c.last_seq
), batch AS NOT MATERIALIZED (
    SELECT * FROM ROWS FROM (
        jsonb_to_recordset(%(rows)s::jsonb)
            AS (type text, task_id uuid, agent text, message text, payload jsonb)
    ) WITH ORDINALITY AS e(type, task_id, agent, message, payload, i)
), inserted AS (
    INSERT INTO events (tenant_id, run_id, seq, task_id, type, agent, message, payload)
    SELECT counter.tenant_id, %(run_id)s, counter.last_seq - %(n)s + e.i,
           e.task_id, e.type, e.agent, e.message, e.payload
    FROM counter, batch e
), note AS (
    SELECT concat_ws(' ', counter.tenant_id, %(run_id)s::text,
                     counter.last_seq - %(n)s + 1, counter.last_seq) AS head,
           CASE WHEN %(n)s <= {CARRY_MAX} THEN (
               SELECT json_agg(json_build_object(
                   'run_id', %(run_id)s, 'seq', counter.last_seq - %(n)s + e.i, 'type', e.type,
                   'task_id', e.task_id, 'agent', e.agent, 'message', e.message,
                   'payload', e.payload, 'created_at', now()) ORDER BY e.i)::text
               FROM batch e) END AS body,
           counter.last_seq
    FROM counter
)
SELECT last_seq,
       pg_notify(%(channel)s,
                 CASE WHEN octet_length(body) + octet_length(head) + 3 <= {NOTE_MAX}
                      THEN 'E ' || head || ' ' || body ELSE 'A ' || head END)
FROM note
"""


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
        APPEND,
        {"tenant_id": tenant_id, "run_id": run_id, "n": n, "rows": rows, "channel": CHANNEL},
    )
    row = await cur.fetchone()
    return None if row is None else _first(row)


async def notify(conn: AsyncConnection[Any], payloads: list[str]) -> None:
    """Queue notifications (delivered on commit) carrying unstored events."""
    await conn.execute(
        "SELECT pg_notify(%s, p) FROM unnest(%s::text[]) AS p", [CHANNEL, payloads]
    )


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


async def position(conn: AsyncConnection[Any], *, tenant_id: UUID, run_id: UUID, seq: int,
                   terminal: list[str]) -> tuple[int, bool]:
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
