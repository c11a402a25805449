"""SQL of operations. The work itself is in SECURITY DEFINER functions
(ops/sql/maintenance.sql), so the operator's commands (owner) and the workers (application
role) run the same code."""

from __future__ import annotations

from typing import Any

from agentplane.db.pool import PARTITION_MAKERS, Connection

# Tables kept in monthly partitions (ops_ensure_partitions creates theirs ahead).
PARTITIONED = tuple(PARTITION_MAKERS)
# Tables whose expired rows are deleted (or moved to the archive).
ROW_TABLES = ("llm_calls",)


async def fetch(conn: Connection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def partitions(conn: Connection, table: str) -> list[dict[str, Any]]:
    """A partitioned table's partitions with their bounds, estimated rows and size."""
    return await fetch(
        conn,
        """
        SELECT p.partition, p.range_from, p.range_to,
               greatest(c.reltuples, 0)::bigint AS rows_estimate,
               pg_total_relation_size(c.oid) AS bytes
        FROM ops_partitions(%s) p
        JOIN pg_class c ON c.oid = format('public.%%I', p.partition)::regclass
        ORDER BY p.range_from
        """,
        [table],
    )


async def ensure_partitions(conn: Connection, months: int) -> list[str]:
    """The current month and `months` ahead of every partitioned table (idempotent)."""
    rows = await fetch(conn, "SELECT ops_ensure_partitions(%s) AS names", [months])
    return rows[0]["names"] or []


async def policies(conn: Connection) -> list[dict[str, Any]]:
    return await fetch(conn, "SELECT * FROM retention_policies ORDER BY table_name")


async def set_policy(conn: Connection, table: str, days: int, action: str, enabled: bool) -> None:
    await conn.execute(
        """
        INSERT INTO retention_policies (table_name, retention_days, action, enabled)
        VALUES (%s, %s, %s, %s)
        ON CONFLICT (table_name) DO UPDATE SET retention_days = excluded.retention_days,
            action = excluded.action, enabled = excluded.enabled, updated_at = now()
        """,
        [table, days, action, enabled],
    )


async def run_retention(conn: Connection) -> dict[str, Any]:
    rows = await fetch(conn, "SELECT ops_run_retention() AS done")
    return rows[0]["done"]


async def archive_tables(conn: Connection) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        """
        SELECT c.relname AS table, greatest(c.reltuples, 0)::bigint AS rows_estimate,
               pg_total_relation_size(c.oid) AS bytes
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'archive' AND c.relkind = 'r' ORDER BY 1
        """,
    )


async def close_billing_periods(conn: Connection) -> int:
    rows = await fetch(conn, "SELECT ops_close_billing_periods() AS n")
    return rows[0]["n"]


async def refresh_views(conn: Connection) -> list[str]:
    rows = await fetch(conn, "SELECT ops_refresh_views() AS views")
    return rows[0]["views"]


async def expire_cached_answers(conn: Connection) -> int:
    """Every tenant's expired answers of the gateway's response cache, deleted."""
    rows = await fetch(conn, "SELECT gateway_cache_expire() AS n")
    return rows[0]["n"]


async def table_sizes(conn: Connection, limit: int) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        """
        SELECT n.nspname || '.' || c.relname AS table, s.bytes, s.rows_estimate
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        -- A partitioned table: its partitions' sum (pg_partition_tree lists nothing for
        -- any other relation).
        CROSS JOIN LATERAL (
            SELECT sum(pg_total_relation_size(k.oid))::bigint AS bytes,
                   sum(greatest(k.reltuples, 0))::bigint AS rows_estimate
            FROM pg_class k
            WHERE k.oid = c.oid OR k.oid IN (SELECT relid FROM pg_partition_tree(c.oid))
        ) s
        WHERE n.nspname IN ('public', 'archive', 'analytics') AND c.relkind IN ('r', 'p', 'm')
          AND NOT c.relispartition
        ORDER BY bytes DESC NULLS LAST LIMIT %s
        """,
        [limit],
    )


async def index_usage(conn: Connection, limit: int) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        """
        SELECT s.relname AS table, s.indexrelname AS index, s.idx_scan AS scans,
               pg_relation_size(s.indexrelid) AS bytes, i.indisunique AS unique
        FROM pg_stat_user_indexes s JOIN pg_index i ON i.indexrelid = s.indexrelid
        WHERE s.schemaname = 'public'
        ORDER BY pg_relation_size(s.indexrelid) DESC LIMIT %s
        """,
        [limit],
    )


async def bloat(conn: Connection, limit: int) -> list[dict[str, Any]]:
    """Dead tuples over all tuples, from the statistics collector (an estimate)."""
    return await fetch(
        conn,
        """
        SELECT relname AS table, n_live_tup AS live, n_dead_tup AS dead,
               round(100.0 * n_dead_tup / greatest(n_live_tup + n_dead_tup, 1), 1) AS dead_pct,
               greatest(last_vacuum, last_autovacuum) AS last_vacuum
        FROM pg_stat_user_tables WHERE schemaname = 'public'
        ORDER BY n_dead_tup DESC LIMIT %s
        """,
        [limit],
    )


async def has_statements(conn: Connection) -> bool:
    rows = await fetch(conn, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
    return bool(rows)


async def slow_statements(conn: Connection, limit: int) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        """
        SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 200) AS query, calls,
               round(mean_exec_time::numeric, 2) AS mean_ms,
               round(total_exec_time::numeric, 1) AS total_ms
        FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT %s
        """,
        [limit],
    )


async def claim_tasks(conn: Connection) -> tuple[list[str], float]:
    """The system tasks due now, claimed for this caller; seconds until the next is due."""
    rows = await fetch(conn, "SELECT * FROM system_tasks_claim()")
    return rows[0]["names"], rows[0]["wait_seconds"]


async def finish_task(conn: Connection, name: str, result: Any, error: str | None) -> None:
    from psycopg.types.json import Jsonb

    await conn.execute("SELECT system_task_finish(%s, %s, %s)", [name, Jsonb(result), error])


async def tasks(conn: Connection) -> list[dict[str, Any]]:
    return await fetch(conn, "SELECT * FROM system_tasks ORDER BY name")


async def set_task(conn: Connection, name: str, seconds: float) -> int:
    cur = await conn.execute(
        "UPDATE system_tasks SET every = make_interval(secs => %s), "
        "next_run_at = least(next_run_at, now() + make_interval(secs => %s)) WHERE name = %s",
        [seconds, seconds, name],
    )
    return cur.rowcount
