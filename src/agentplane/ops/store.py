"""SQL of operations (run as the owner: they span tenants)."""

from __future__ import annotations

from typing import Any

from agentplane.db.pool import Connection

# Tables kept in monthly partitions, with the function creating a month's partition.
PARTITIONED = {
    "usage_records": "usage_records_create_partition",
    "events": "events_create_partition",
}
# Tables whose expired rows are deleted (or moved to the archive) in batches.
ROW_TABLES = {"llm_calls": "created_at"}
BATCH = 10_000


async def fetch(conn: Connection, sql: str, params: Any = None) -> list[dict[str, Any]]:
    cur = await conn.execute(sql, params)
    return await cur.fetchall()


async def partitions(conn: Connection, table: str) -> list[dict[str, Any]]:
    """A partitioned table's partitions with their bounds, estimated rows and size."""
    return await fetch(
        conn,
        """
        WITH p AS (
            SELECT c.oid, c.relname, c.reltuples,
                   regexp_match(pg_get_expr(c.relpartbound, c.oid),
                                'FROM \\(''([^'']+)''\\) TO \\(''([^'']+)''\\)') AS b
            FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = format('public.%%I', %s::text)::regclass
        )
        SELECT relname AS partition, b[1]::timestamptz AS range_from,
               b[2]::timestamptz AS range_to, greatest(reltuples, 0)::bigint AS rows_estimate,
               pg_total_relation_size(oid) AS bytes
        FROM p ORDER BY range_from
        """,
        [table],
    )


async def ensure_partitions(conn: Connection, table: str, months: int) -> list[str]:
    fn = PARTITIONED[table]
    rows = await fetch(
        conn,
        f"SELECT {fn}(now() + make_interval(months => m)) AS name "
        "FROM generate_series(0, %s) AS m",
        [months],
    )
    return [r["name"] for r in rows]


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


async def record_run(conn: Connection, table: str, result: Any) -> None:
    from psycopg.types.json import Jsonb

    await conn.execute(
        "UPDATE retention_policies SET last_run_at = now(), last_result = %s "
        "WHERE table_name = %s",
        [Jsonb(result), table],
    )


async def retire_partition(conn: Connection, table: str, partition: str, action: str) -> None:
    """Archive: detach and move to the `archive` schema (no row is copied). Delete: drop."""
    await conn.execute("SET LOCAL lock_timeout = '10s'")
    if action == "archive":
        await conn.execute(f'ALTER TABLE public."{table}" DETACH PARTITION public."{partition}"')
        await conn.execute(f'ALTER TABLE public."{partition}" SET SCHEMA archive')
    else:
        await conn.execute(f'DROP TABLE public."{partition}"')


async def retire_rows(conn: Connection, table: str, days: int, action: str) -> int:
    """One batch of expired rows of a row table, deleted (and archived); how many."""
    column = ROW_TABLES[table]
    expired = f"""
        DELETE FROM public."{table}" WHERE ctid = ANY(ARRAY(
            SELECT ctid FROM public."{table}"
            WHERE {column} < now() - make_interval(days => %s) LIMIT {BATCH}))
        RETURNING *"""
    if action == "archive":
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS archive."{table}" (LIKE public."{table}")'
        )
        cur = await conn.execute(
            f'WITH moved AS ({expired}) INSERT INTO archive."{table}" SELECT * FROM moved', [days]
        )
    else:
        cur = await conn.execute(expired, [days])
    return cur.rowcount


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
    """Freeze every tenant's months that ended (from the rollup); how many closed."""
    cur = await conn.execute(
        """
        INSERT INTO billing_periods (tenant_id, period_start, period_end, status,
            runs_completed, runs_failed, runs_cancelled, calls, prompt_tokens,
            completion_tokens, cached_tokens, cost_usd, token_limit, closed_at)
        SELECT d.tenant_id, m.start, (m.start + interval '1 month')::date, 'closed',
               sum(d.runs_completed), sum(d.runs_failed), sum(d.runs_cancelled), sum(d.calls),
               sum(d.prompt_tokens), sum(d.completion_tokens), sum(d.cached_tokens),
               sum(d.cost_usd), t.token_limit, now()
        FROM usage_daily d
        JOIN tenants t ON t.id = d.tenant_id
        CROSS JOIN LATERAL (SELECT date_trunc('month', d.day)::date AS start) m
        WHERE d.dimension = 'tenant'
          AND d.day < date_trunc('month', usage_utc_day(now()))::date
          AND NOT EXISTS (SELECT 1 FROM billing_periods b
                          WHERE b.tenant_id = d.tenant_id AND b.period_start = m.start)
        GROUP BY d.tenant_id, m.start, t.token_limit
        ON CONFLICT DO NOTHING
        """
    )
    return cur.rowcount


VIEWS = ("analytics.agent_performance_daily", "analytics.project_task_stats")


async def refresh_view(conn: Connection, view: str) -> None:
    await conn.execute(f"REFRESH MATERIALIZED VIEW CONCURRENTLY {view}")


async def table_sizes(conn: Connection, limit: int) -> list[dict[str, Any]]:
    return await fetch(
        conn,
        """
        SELECT n.nspname || '.' || c.relname AS table,
               (SELECT sum(pg_total_relation_size(t.relid)) FROM pg_partition_tree(c.oid) t
               )::bigint AS bytes,
               (SELECT sum(greatest(k.reltuples, 0)) FROM pg_partition_tree(c.oid) t
                JOIN pg_class k ON k.oid = t.relid)::bigint AS rows_estimate
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
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
