"""SQL of the usage ledger and of budgets (the functions of migration 0005 do the locking)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

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
        "SELECT llm_reserve(%s, %s, %s, %s, make_interval(secs => %s), %s) AS id",
        [tenant_id, session_id, api_key_id, tokens, ttl_s, f"{lock_timeout_ms}ms"],
    )
    return (await cur.fetchone())["id"]


async def journal(
    conn: Connection,
    reservation_id: UUID | None,
    session_id: UUID | None,
    api_key_id: UUID | None,
    used: int,
) -> None:
    await conn.execute(
        "SELECT llm_journal(%s, %s, %s, %s)", [reservation_id, session_id, api_key_id, used]
    )


async def settle(conn: Connection, tenant_id: UUID, reservation_id: UUID) -> None:
    """One statement, on an autocommit connection or inside a tenant transaction."""
    await conn.execute("SELECT llm_settle(%s, %s)", [tenant_id, reservation_id])


async def release_expired(conn: Connection) -> int:
    cur = await conn.execute("SELECT llm_release_expired() AS n")
    return (await cur.fetchone())["n"]


async def insert_record(conn: Connection, record: dict[str, Any]) -> None:
    await conn.execute(
        """
        INSERT INTO usage_records (tenant_id, llm_call_id, user_id, api_key_id, session_id,
            run_id, task_id, agent_id, provider, model, prompt_tokens, completion_tokens,
            cached_tokens, cost_usd, cost_source)
        VALUES (app_current_tenant(), %(llm_call_id)s, %(user_id)s, %(api_key_id)s,
            %(session_id)s, %(run_id)s, %(task_id)s, %(agent_id)s, %(provider)s, %(model)s,
            %(prompt_tokens)s, %(completion_tokens)s, %(cached_tokens)s, %(cost_usd)s,
            %(cost_source)s)
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
) -> dict[str, Any]:
    cur = await conn.execute(
        """
        INSERT INTO api_key_budgets (api_key_id, tenant_id, token_budget)
        VALUES (%s, app_current_tenant(), %s)
        ON CONFLICT (api_key_id) DO UPDATE SET token_budget = excluded.token_budget,
                                               updated_at = now()
        RETURNING api_key_id, token_budget, tokens_used, tokens_reserved
        """,
        [api_key_id, token_budget],
    )
    return await cur.fetchone()


async def get_api_key_budget(conn: Connection, api_key_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT api_key_id, token_budget, tokens_used, tokens_reserved FROM api_key_budgets "
        "WHERE api_key_id = %s",
        [api_key_id],
    )
    return await cur.fetchone()
