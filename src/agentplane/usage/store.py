"""SQL of the usage ledger and of budgets (the functions of usage/sql/budgets.sql do the
locking)."""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection


async def reserve(
    conn: Connection,
    tenant_id: UUID,
    session_id: UUID | None,
    api_key_id: UUID | None,
    tokens: int,
    ttl_s: int,
    lock_timeout_ms: int,
) -> UUID:
    """One statement on an autocommit connection (it sets the tenant itself)."""
    cur = await conn.execute(
        "SELECT usage_reserve(%s, %s, %s, %s, make_interval(secs => %s), %s) AS id",
        [tenant_id, session_id, api_key_id, tokens, ttl_s, f"{lock_timeout_ms}ms"],
    )
    return (await cur.fetchone())["id"]


async def reserve_many(
    conn: Connection,
    tenant_id: UUID,
    reservations: list[tuple[int, UUID | None, UUID | None]],
    ttl_s: int,
    lock_timeout_ms: int,
) -> list[dict[str, Any]]:
    """One statement on an autocommit connection (it sets the tenant itself): for each
    (tokens, session, API key), {"id": reservation} or {"code": SQLSTATE, "message": refusal}."""
    cur = await conn.execute(
        "SELECT usage_reserve_many(%s, %s, make_interval(secs => %s), %s) AS reservations",
        [
            tenant_id,
            Jsonb([{"tokens": t, "session_id": s, "api_key_id": k} for t, s, k in reservations]),
            ttl_s,
            f"{lock_timeout_ms}ms",
        ],
    )
    return (await cur.fetchone())["reservations"]


async def journal(
    conn: Connection,
    reservation_id: UUID | None,
    session_id: UUID | None,
    api_key_id: UUID | None,
    used: int,
) -> None:
    await conn.execute(
        "SELECT usage_journal(%s, %s, %s, %s)", [reservation_id, session_id, api_key_id, used]
    )


async def settle(conn: Connection, tenant_id: UUID, reservation_id: UUID) -> None:
    """One statement, on an autocommit connection or inside a tenant transaction."""
    await conn.execute("SELECT usage_settle(%s, %s)", [tenant_id, reservation_id])


async def settle_many(
    conn: Connection,
    reservation_ids: list[UUID | None],
    session_ids: list[UUID | None],
    api_key_ids: list[UUID | None],
    used: list[int],
) -> None:
    """Reservations settled to what their calls used, in the transaction recording the calls."""
    await conn.execute(
        "SELECT usage_settle_many(%s::uuid[], %s::uuid[], %s::uuid[], %s::bigint[])",
        [reservation_ids, session_ids, api_key_ids, used],
    )


async def release_expired(conn: Connection) -> int:
    cur = await conn.execute("SELECT usage_release_expired() AS n")
    return (await cur.fetchone())["n"]


async def insert_record(conn: Connection, record: dict[str, Any]) -> None:
    await conn.execute(
        """
        INSERT INTO usage_records (tenant_id, llm_call_id, user_id, api_key_id, session_id,
            run_id, task_id, agent_id, provider, model, prompt_tokens, completion_tokens,
            cached_tokens, cost_usd, cost_source, latency_ms)
        VALUES (app_current_tenant(), %(llm_call_id)s, %(user_id)s, %(api_key_id)s,
            %(session_id)s, %(run_id)s, %(task_id)s, %(agent_id)s, %(provider)s, %(model)s,
            %(prompt_tokens)s, %(completion_tokens)s, %(cached_tokens)s, %(cost_usd)s,
            %(cost_source)s, %(latency_ms)s)
        """,
        record,
    )


async def list_records(conn: Connection, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT * FROM usage_records ORDER BY created_at DESC, id DESC LIMIT %s", [limit]
    )
    return await cur.fetchall()


async def tenant_budget(conn: Connection) -> dict[str, Any] | None:
    cur = await conn.execute(
        """
        SELECT token_limit,
               CASE WHEN usage_month = date_trunc('month', now())::date
                    THEN monthly_token_usage ELSE 0 END AS monthly_token_usage,
               tokens_reserved
        FROM tenants WHERE id = app_current_tenant()
        """
    )
    return await cur.fetchone()


async def set_api_key_budget(
    conn: Connection, api_key_id: UUID, token_budget: int
) -> dict[str, Any] | None:
    cur = await conn.execute(
        """
        INSERT INTO api_key_budgets (api_key_id, tenant_id, token_budget)
        SELECT k.id, k.tenant_id, %s FROM api_keys k WHERE k.id = %s  -- visible keys only
        ON CONFLICT (api_key_id) DO UPDATE SET token_budget = excluded.token_budget,
                                               updated_at = now()
        RETURNING api_key_id, token_budget, tokens_used, tokens_reserved
        """,
        [token_budget, api_key_id],
    )
    return await cur.fetchone()


async def get_api_key_budget(conn: Connection, api_key_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT api_key_id, token_budget, tokens_used, tokens_reserved FROM api_key_budgets "
        "WHERE api_key_id = %s",
        [api_key_id],
    )
    return await cur.fetchone()


# -- reports: everything below reads the usage_daily rollup, never raw rows -------------

# The rollup's dimension and the expression giving the report key, per `by`.
BY = {
    None: ("tenant", "d.key"),
    "model": ("model", "d.key"),
    "provider": ("model", "split_part(d.key, '/', 1)"),
    "agent": ("agent", "d.key"),
    "user": ("user", "d.key"),
    "key": ("api_key", "d.key"),
    "project": ("project", "d.key"),
    "tool": ("tool", "d.key"),
}

# What a person reads for a key that is an id (the key itself stays, whole, beside it).
LABEL = {
    "agent": "(SELECT a.slug FROM agents a WHERE a.id::text = g.key)",
    "user": "(SELECT u.email FROM users u WHERE u.id::text = g.key)",
    "key": "(SELECT k.name FROM api_keys k WHERE k.id::text = g.key)",
    "project": "(SELECT p.slug FROM projects p WHERE p.id::text = g.key)",
}

SUMS = """
    sum(d.calls)::bigint AS calls, sum(d.prompt_tokens)::bigint AS prompt_tokens,
    sum(d.completion_tokens)::bigint AS completion_tokens,
    sum(d.cached_tokens)::bigint AS cached_tokens,
    sum(d.prompt_tokens + d.completion_tokens)::bigint AS total_tokens,
    sum(d.cost_usd) AS cost_usd, sum(d.unpriced_calls)::bigint AS unpriced_calls,
    sum(d.llm_latency_ms)::bigint AS llm_latency_ms,
    sum(d.tasks_completed)::bigint AS tasks_completed,
    sum(d.tasks_failed)::bigint AS tasks_failed,
    sum(d.task_duration_ms)::bigint AS task_duration_ms,
    sum(d.tool_calls)::bigint AS tool_calls, sum(d.tool_failures)::bigint AS tool_failures,
    sum(d.runs_completed)::bigint AS runs_completed, sum(d.runs_failed)::bigint AS runs_failed,
    sum(d.runs_cancelled)::bigint AS runs_cancelled
"""


async def report(
    conn: Connection,
    *,
    period: str,
    by: str | None,
    since: date,
    until: date,
    value: str | None,
) -> list[dict[str, Any]]:
    """Rows per period (day, week or month) and key of `by`, from the rollup."""
    dimension, key = BY[by]
    cur = await conn.execute(
        f"""
        SELECT g.*, {LABEL.get(by or "", "NULL::text")} AS label FROM (
            SELECT date_trunc(%(period)s, d.day)::date AS period_start, {key} AS key, {SUMS}
            FROM usage_daily d
            WHERE d.tenant_id = app_current_tenant() AND d.dimension = %(dimension)s
              AND d.day BETWEEN %(since)s AND %(until)s
              AND (%(value)s::text IS NULL OR {key} = %(value)s)
            GROUP BY 1, 2
        ) g ORDER BY 1, 2
        """,
        {"period": period, "dimension": dimension, "since": since, "until": until, "value": value},
    )
    return await cur.fetchall()


# What "top" orders by: cost first (unknown last), then tokens; tools by their calls.
TOP_ORDER = {
    "cost": "g.cost_usd DESC NULLS LAST, g.total_tokens DESC, g.key",
    "tool_calls": "g.tool_calls DESC, g.tool_failures DESC, g.key",
}


async def top(
    conn: Connection, *, by: str, since: date, until: date, order: str, limit: int
) -> list[dict[str, Any]]:
    """The keys of `by` with the most cost (or tool calls) over the days, summed whole."""
    dimension, key = BY[by]
    cur = await conn.execute(
        f"""
        SELECT g.*, {LABEL.get(by, "NULL::text")} AS label FROM (
            SELECT %(since)s::date AS period_start, {key} AS key, {SUMS}
            FROM usage_daily d
            WHERE d.tenant_id = app_current_tenant() AND d.dimension = %(dimension)s
              AND d.day BETWEEN %(since)s AND %(until)s
            GROUP BY 2
        ) g ORDER BY {TOP_ORDER[order]} LIMIT %(limit)s
        """,
        {"dimension": dimension, "since": since, "until": until, "limit": limit},
    )
    return await cur.fetchall()


async def task_durations(conn: Connection, since: date, until: date) -> dict[str, Any]:
    """Percentiles of the durations of the tasks that finished in the days (the rollup
    keeps sums, which give means only)."""
    cur = await conn.execute(
        """
        SELECT count(*) AS tasks,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY t.duration_ms) AS p50,
               percentile_cont(0.95) WITHIN GROUP (ORDER BY t.duration_ms) AS p95
          FROM tasks t
         WHERE t.tenant_id = app_current_tenant()
           AND t.completed_at >= %(since)s::date AND t.completed_at < %(until)s::date + 1
           AND t.status IN ('completed', 'failed') AND t.duration_ms IS NOT NULL
        """,
        {"since": since, "until": until},
    )
    return await cur.fetchone()


async def period_totals(conn: Connection, since: date, until: date) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        SELECT {SUMS} FROM usage_daily d
        WHERE d.tenant_id = app_current_tenant() AND d.dimension = 'tenant'
          AND d.day BETWEEN %s AND %s
        """,
        [since, until],
    )
    return await cur.fetchone()


async def agent_id(conn: Connection, slug: str) -> UUID | None:
    cur = await conn.execute("SELECT id FROM agents WHERE slug = %s", [slug])
    row = await cur.fetchone()
    return row["id"] if row else None


async def billing_periods(conn: Connection, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT * FROM billing_periods ORDER BY period_start DESC LIMIT %s", [limit]
    )
    return await cur.fetchall()


# -- alerts -----------------------------------------------------------------------------

ALERT_COLUMNS = (
    "id, name, scope, subject_id, metric, period, threshold, unit, enabled, created_by, "
    "created_at, updated_at"
)


async def subject_exists(conn: Connection, scope: str, subject_id: UUID) -> bool:
    if scope == "user":
        sql = "SELECT 1 FROM memberships WHERE user_id = %s"
    else:
        sql = "SELECT 1 FROM api_keys WHERE id = %s"
    cur = await conn.execute(sql, [subject_id])
    return await cur.fetchone() is not None


async def insert_alert(conn: Connection, alert: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        INSERT INTO usage_alerts (tenant_id, name, scope, subject_id, metric, period,
                                  threshold, unit, enabled, created_by)
        VALUES (app_current_tenant(), %(name)s, %(scope)s, %(subject_id)s, %(metric)s,
                %(period)s, %(threshold)s, %(unit)s, %(enabled)s, %(created_by)s)
        RETURNING {ALERT_COLUMNS}
        """,
        alert,
    )
    return await cur.fetchone()


async def list_alerts(conn: Connection) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {ALERT_COLUMNS} FROM usage_alerts ORDER BY name")
    return await cur.fetchall()


async def get_alert(conn: Connection, alert_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {ALERT_COLUMNS} FROM usage_alerts WHERE id = %s", [alert_id])
    return await cur.fetchone()


async def update_alert(
    conn: Connection, alert_id: UUID, changes: dict[str, Any]
) -> dict[str, Any] | None:
    sets = ", ".join(f"{name} = %({name})s" for name in changes)
    cur = await conn.execute(
        f"UPDATE usage_alerts SET {sets} WHERE id = %(id)s RETURNING {ALERT_COLUMNS}",
        {**changes, "id": alert_id},
    )
    return await cur.fetchone()


async def delete_alert(conn: Connection, alert_id: UUID) -> bool:
    cur = await conn.execute("DELETE FROM usage_alerts WHERE id = %s RETURNING id", [alert_id])
    return await cur.fetchone() is not None


async def alert_firings(conn: Connection, alert_id: UUID, limit: int) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT alert_id, period_start, value, threshold, run_id, fired_at "
        "FROM usage_alert_firings WHERE alert_id = %s ORDER BY period_start DESC LIMIT %s",
        [alert_id, limit],
    )
    return await cur.fetchall()


async def firings_since(conn: Connection, since: date) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT alert_id, period_start, value, threshold, run_id, fired_at "
        "FROM usage_alert_firings WHERE period_start >= %s ORDER BY fired_at",
        [since],
    )
    return await cur.fetchall()
