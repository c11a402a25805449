"""SQL of the event log, and nothing else."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg import AsyncConnection
from psycopg.rows import dict_row

CHANNEL = "agentplane_events"

# One round trip: bump the run's counter (which serialises writers of the run and
# checks that the run exists in this tenant), insert the batch numbered from it, and
# queue one notification, delivered only if the caller's transaction commits.
APPEND = """
WITH counter AS (
    INSERT INTO event_counters AS c (tenant_id, run_id, last_seq)
    SELECT r.tenant_id, r.id, %(n)s FROM runs r
    WHERE r.id = %(run_id)s AND r.tenant_id = %(tenant_id)s
    ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq
    RETURNING c.tenant_id, c.last_seq
), inserted AS (
    INSERT INTO events (tenant_id, run_id, seq, task_id, type, agent, message, payload)
    SELECT counter.tenant_id, %(run_id)s, counter.last_seq - %(n)s + e.ord,
           e.task_id, e.type, e.agent, e.message, e.payload::jsonb
    FROM counter,
         unnest(%(task_ids)s::uuid[], %(types)s::text[], %(agents)s::text[],
                %(messages)s::text[], %(payloads)s::text[])
             WITH ORDINALITY AS e(task_id, type, agent, message, payload, ord)
)
SELECT counter.last_seq,
       pg_notify(%(channel)s, concat_ws(' ', 'A', counter.tenant_id, %(run_id)s::text,
                                        counter.last_seq - %(n)s + 1, counter.last_seq))
FROM counter
"""


async def append(
    conn: AsyncConnection[Any],
    *,
    tenant_id: UUID,
    run_id: UUID,
    task_ids: list[UUID | None],
    types: list[str],
    agents: list[str | None],
    messages: list[str | None],
    payloads: list[str],
) -> int | None:
    """Store a batch; the run's last sequence number after it, None if no such run."""
    cur = await conn.execute(
        APPEND,
        {
            "tenant_id": tenant_id,
            "run_id": run_id,
            "n": len(types),
            "task_ids": task_ids,
            "types": types,
            "agents": agents,
            "messages": messages,
            "payloads": payloads,
            "channel": CHANNEL,
        },
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


async def ended_by(conn: AsyncConnection[Any], *, tenant_id: UUID, run_id: UUID, seq: int,
                   terminal: list[str]) -> bool:
    """Whether a terminal event of the run has a sequence number up to `seq`."""
    cur = await conn.execute(
        """
        SELECT EXISTS (SELECT 1 FROM events
                       WHERE tenant_id = %s AND run_id = %s AND seq <= %s AND type = ANY(%s))
        """,
        [tenant_id, run_id, seq, terminal],
    )
    row = await cur.fetchone()
    return bool(row and _first(row))


async def listen(conn: AsyncConnection[Any]) -> None:
    await conn.execute(f"LISTEN {CHANNEL}")


async def ensure_partitions(conn: AsyncConnection[Any], months: int) -> None:
    await conn.execute("SELECT events_ensure_partitions(%s)", [months])


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]
