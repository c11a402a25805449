"""SQL of providers, models and prices, and LLM calls. Nothing else lives here."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection


def _exec(conn: Connection, query: Any, params: Any = None) -> Any:
    """Prepared from the first use on a connection: these statements run on every task or
    call, and preparing them spares the server parsing and planning them each time."""
    return conn.execute(query, params, prepare=True)


PROVIDER_COLUMNS = """
    id, tenant_id, tenant_id IS NULL AS builtin, name, type, base_url,
    api_key_ciphertext IS NOT NULL AS has_api_key, model, weight, enabled, config,
    health_status, response_time, consecutive_failures, last_error, last_checked_at,
    created_at, updated_at
"""


async def insert_provider(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        INSERT INTO llm_providers (id, tenant_id, name, type, base_url, api_key_ciphertext,
                                   model, weight, enabled, config)
        VALUES (%(id)s, app_current_tenant(), %(name)s, %(type)s, %(base_url)s, %(ciphertext)s,
                %(model)s, %(weight)s, %(enabled)s, %(config)s)
        RETURNING {PROVIDER_COLUMNS}
        """,
        {**values, "config": Jsonb(values["config"])},
    )
    return await cur.fetchone()


async def list_providers(conn: Connection) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {PROVIDER_COLUMNS} FROM llm_providers ORDER BY tenant_id IS NULL, name"
    )
    return await cur.fetchall()


async def get_provider(conn: Connection, ref: str) -> dict[str, Any] | None:
    """By id or name; a tenant's own provider shadows a built-in of the same name."""
    cur = await _exec(
        conn,
        f"""
        SELECT {PROVIDER_COLUMNS}, api_key_ciphertext FROM llm_providers
        WHERE name = %(ref)s OR id::text = %(ref)s
        ORDER BY tenant_id IS NULL LIMIT 1
        """,
        {"ref": ref},
    )
    return await cur.fetchone()


async def default_provider(conn: Connection) -> dict[str, Any] | None:
    """The tenant's enabled provider of highest weight, else the built-in offline one."""
    cur = await _exec(
        conn,
        f"""
        SELECT {PROVIDER_COLUMNS}, api_key_ciphertext FROM llm_providers
        WHERE enabled ORDER BY tenant_id IS NULL, weight DESC, name LIMIT 1
        """,
    )
    return await cur.fetchone()


async def update_provider(
    conn: Connection, provider_id: UUID, values: dict[str, Any]
) -> dict[str, Any] | None:
    if "config" in values:
        values = {**values, "config": Jsonb(values["config"])}
    sets = ", ".join(f"{column} = %({column})s" for column in values)
    cur = await conn.execute(
        f"""
        UPDATE llm_providers SET {sets} WHERE id = %(id)s AND tenant_id = app_current_tenant()
        RETURNING {PROVIDER_COLUMNS}
        """,
        {**values, "id": provider_id},
    )
    return await cur.fetchone()


async def delete_provider(conn: Connection, provider_id: UUID) -> bool:
    cur = await conn.execute(
        "DELETE FROM llm_providers WHERE id = %s AND tenant_id = app_current_tenant()",
        [provider_id],
    )
    return cur.rowcount == 1


async def claim_trial(conn: Connection, provider_id: UUID, cooldown_s: float) -> bool:
    """Whether this caller may try an unhealthy provider again: its cool-down since the
    last check has passed, and no other caller claimed the trial (the claim restarts it)."""
    cur = await _exec(
        conn,
        """
        UPDATE llm_providers SET last_checked_at = now()
        WHERE id = %(id)s AND tenant_id IS NOT NULL AND health_status = 'unhealthy'
          AND (last_checked_at IS NULL
               OR last_checked_at <= now() - make_interval(secs => %(cooldown)s))
        RETURNING id
        """,
        {"id": provider_id, "cooldown": cooldown_s},
    )
    return await cur.fetchone() is not None


async def record_health(
    conn: Connection, provider_id: UUID, ok: bool, latency_ms: int, error: str | None
) -> None:
    """Health from each call. Writes only when the status changes or a few seconds have
    passed, so concurrent calls do not queue on the provider's row."""
    await _exec(
        conn,
        """
        WITH next AS (
            SELECT id, CASE WHEN %(ok)s THEN 0 ELSE consecutive_failures + 1 END AS failures
            FROM llm_providers WHERE id = %(id)s AND tenant_id IS NOT NULL
        )
        UPDATE llm_providers p SET
            consecutive_failures = next.failures,
            health_status = CASE WHEN next.failures = 0 THEN 'healthy'
                                 WHEN next.failures < 3 THEN 'degraded' ELSE 'unhealthy' END,
            response_time = CASE WHEN %(ok)s THEN %(latency)s ELSE p.response_time END,
            last_error = CASE WHEN %(ok)s THEN p.last_error ELSE %(error)s END,
            last_checked_at = now()
        FROM next
        WHERE p.id = next.id AND (
            next.failures <> p.consecutive_failures
            OR p.last_checked_at IS NULL OR p.last_checked_at < now() - interval '5 seconds')
        """,
        {"id": provider_id, "ok": ok, "latency": latency_ms, "error": error},
    )


# -- models and prices ---------------------------------------------------------------------

MODEL_COLUMNS = "id, tenant_id, tenant_id IS NULL AS builtin, provider, name, context_window"


async def insert_model(
    conn: Connection, provider: str, name: str, context_window: int | None
) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        INSERT INTO llm_models (tenant_id, provider, name, context_window)
        VALUES (app_current_tenant(), %s, %s, %s) RETURNING {MODEL_COLUMNS}
        """,
        [provider, name, context_window],
    )
    return await cur.fetchone()


async def list_models(
    conn: Connection, provider: str | None = None, model_id: UUID | None = None
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"""
        SELECT {MODEL_COLUMNS}, coalesce((
            -- prices as text: JSON numbers would come back as floats
            SELECT jsonb_agg(jsonb_build_object(
                'id', p.id, 'input_per_mtok', p.input_per_mtok::text,
                'output_per_mtok', p.output_per_mtok::text,
                'cached_input_per_mtok', p.cached_input_per_mtok::text,
                'cache_write_per_mtok', p.cache_write_per_mtok::text,
                'valid_from', p.valid_from, 'valid_to', p.valid_to) ORDER BY p.valid_from DESC)
            FROM llm_prices p WHERE p.model_id = m.id), '[]') AS prices
        FROM llm_models m
        WHERE (%(provider)s::text IS NULL OR provider = %(provider)s)
          AND (%(id)s::uuid IS NULL OR id = %(id)s)
        ORDER BY provider, name, tenant_id IS NULL
        """,
        {"provider": provider, "id": model_id},
    )
    return await cur.fetchall()


async def get_model(conn: Connection, model_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {MODEL_COLUMNS} FROM llm_models m WHERE id = %s", [model_id])
    return await cur.fetchone()


async def update_model(conn: Connection, model_id: UUID, context_window: int | None) -> bool:
    cur = await conn.execute(
        "UPDATE llm_models SET context_window = %s WHERE id = %s"
        " AND tenant_id = app_current_tenant()",
        [context_window, model_id],
    )
    return cur.rowcount == 1


async def delete_model(conn: Connection, model_id: UUID) -> bool:
    cur = await conn.execute(
        "DELETE FROM llm_models WHERE id = %s AND tenant_id = app_current_tenant()", [model_id]
    )
    return cur.rowcount == 1


async def close_open_price(conn: Connection, model_id: UUID, at: datetime) -> dict[str, Any] | None:
    """Ends the open price at `at`; returns it (None if there was none)."""
    cur = await conn.execute(
        """
        UPDATE llm_prices SET valid_to = %s WHERE model_id = %s AND valid_to IS NULL
        RETURNING id, valid_from
        """,
        [at, model_id],
    )
    return await cur.fetchone()


async def open_price(conn: Connection, model_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT id, valid_from FROM llm_prices WHERE model_id = %s AND valid_to IS NULL FOR UPDATE",
        [model_id],
    )
    return await cur.fetchone()


async def insert_price(conn: Connection, model_id: UUID, values: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        """
        INSERT INTO llm_prices (tenant_id, model_id, input_per_mtok, output_per_mtok,
                                cached_input_per_mtok, cache_write_per_mtok, valid_from)
        VALUES (app_current_tenant(), %(model_id)s, %(input_per_mtok)s, %(output_per_mtok)s,
                %(cached_input_per_mtok)s, %(cache_write_per_mtok)s, %(valid_from)s)
        RETURNING id, input_per_mtok, output_per_mtok, cached_input_per_mtok,
                  cache_write_per_mtok, valid_from, valid_to
        """,
        {**values, "model_id": model_id},
    )
    return await cur.fetchone()


# The price of {model} at {at} for a provider named {provider} of vendor family {family}:
# listed under the provider's name, else under its family (a provider named "claude" of
# type anthropic is priced as "anthropic"), else under any built-in provider with a model
# of that name (a provider named "work-openai" serving gpt-4o is priced as gpt-4o, whoever
# serves it). At each step the tenant's own model row wins over the built-in one.
PRICE = """
    SELECT p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok,
           p.cache_write_per_mtok, true AS found
    FROM llm_models m JOIN llm_prices p ON p.model_id = m.id
    WHERE m.name = {model} AND (m.provider IN ({provider}, {family}) OR m.tenant_id IS NULL)
      AND p.valid_from <= {at} AND (p.valid_to IS NULL OR p.valid_to > {at})
    ORDER BY CASE m.provider WHEN {provider} THEN 0 WHEN {family} THEN 1 ELSE 2 END,
             m.tenant_id IS NULL, m.provider
    LIMIT 1
"""


async def price_at(
    conn: Connection, provider: str, family: str, model: str, at: datetime
) -> dict[str, Any] | None:
    """The price valid at `at` (see PRICE)."""
    cur = await _exec(
        conn,
        PRICE.format(
            provider="%(provider)s", family="%(family)s", model="%(model)s", at="%(at)s"
        ),
        {"provider": provider, "family": family, "model": model, "at": at},
    )
    row = await cur.fetchone()
    if row is not None:
        row.pop("found")
    return row


async def prices_at(
    conn: Connection, wanted: list[tuple[str, str, str, datetime]]
) -> list[dict[str, Any] | None]:
    """price_at for many (provider, family, model, at) at once, in their order."""
    if not wanted:
        return []
    providers, families, models, ats = (list(c) for c in zip(*wanted, strict=True))
    price = PRICE.format(provider="w.provider", family="w.family", model="w.model", at="w.at")
    cur = await _exec(
        conn,
        f"""
        SELECT p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok,
               p.cache_write_per_mtok, p.found
        FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[])
             WITH ORDINALITY AS w(provider, family, model, at, n)
        LEFT JOIN LATERAL ({price}) p ON true
        ORDER BY w.n
        """,
        [providers, families, models, ats],
    )
    return [row if row.pop("found") else None for row in await cur.fetchall()]


# -- LLM calls -----------------------------------------------------------------------------


async def insert_call(conn: Connection, call: dict[str, Any]) -> None:
    await _exec(
        conn,
        """
        INSERT INTO llm_calls (id, tenant_id, user_id, api_key_id, session_id, run_id, task_id,
            agent_execution_id, agent_id, provider_id, provider, model, request,
            response_content, tool_calls, finish_reason, prompt_tokens, completion_tokens,
            cached_tokens, cache_write_tokens, cost_usd, cost_source, reserved_tokens, stream,
            latency_ms, ttft_ms, status, error, created_at, completed_at, reasoning_tokens,
            tokens_estimated, endpoint, request_id, stream_chunks, chunk_gap_p50_ms,
            chunk_gap_p99_ms, project_id, tags, cached)
        VALUES (%(id)s, app_current_tenant(), %(user_id)s, %(api_key_id)s, %(session_id)s,
            %(run_id)s, %(task_id)s, %(agent_execution_id)s, %(agent_id)s, %(provider_id)s,
            %(provider)s, %(model)s, %(request)s, %(response_content)s, %(tool_calls)s,
            %(finish_reason)s, %(prompt_tokens)s, %(completion_tokens)s, %(cached_tokens)s,
            %(cache_write_tokens)s, %(cost_usd)s, %(cost_source)s, %(reserved_tokens)s,
            %(stream)s, %(latency_ms)s, %(ttft_ms)s, %(status)s, %(error)s, %(created_at)s, now(),
            %(reasoning_tokens)s, %(tokens_estimated)s, %(endpoint)s, %(request_id)s,
            %(stream_chunks)s, %(chunk_gap_p50_ms)s, %(chunk_gap_p99_ms)s, %(project_id)s,
            %(tags)s, %(cached)s)
        """,
        {
            **call,
            "request": Jsonb(call["request"]),
            "tool_calls": Jsonb(call["tool_calls"]) if call["tool_calls"] is not None else None,
        },
    )


CALL_FILTERS = {
    "session_id": "session_id = %(session_id)s",
    "user_id": "user_id = %(user_id)s",
    "api_key_id": "api_key_id = %(api_key_id)s",
    "task_id": "task_id = %(task_id)s",
    "run_id": "run_id = %(run_id)s",
    "provider": "provider = %(provider)s",
    "model": "model = %(model)s",
    "status": "status = %(status)s",
    "endpoint": "endpoint = %(endpoint)s",
    "request_id": "request_id = %(request_id)s",
    "project_id": "project_id = %(project_id)s",
    # `tags <> '{}'` lets the planner use the partial index of calls with tags.
    "tag": "tags <> '{}' AND tags @> ARRAY[%(tag)s]::text[]",
    "cached": "cached = %(cached)s",
    "since": "created_at >= %(since)s",
    "until": "created_at < %(until)s",
    "before": "(created_at, id) < (SELECT created_at, id FROM llm_calls WHERE id = %(before)s)",
}


async def list_calls(conn: Connection, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    """Newest first; `before` (a call id) pages on."""
    where = [CALL_FILTERS[k] for k, v in filters.items() if v is not None]
    cur = await conn.execute(
        f"""
        SELECT * FROM llm_calls WHERE {" AND ".join(where) or "true"}
        ORDER BY created_at DESC, id DESC LIMIT %(limit)s
        """,
        {**filters, "limit": limit},
    )
    return await cur.fetchall()


async def get_call(conn: Connection, call_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute("SELECT * FROM llm_calls WHERE id = %s", [call_id])
    return await cur.fetchone()


# -- calls in flight (llm/sql/in_flight.sql) ------------------------------------------------

IN_FLIGHT_FRESH_S = 10
"""Rows written longer ago than this are of processes gone: not counted."""


async def publish_in_flight(conn: Connection, process: UUID, rows: list[dict[str, Any]]) -> None:
    """This process's counts, in place of those it wrote before (on the owner's
    connection, for all tenants at once)."""
    await conn.execute("DELETE FROM llm_in_flight WHERE process = %s", [process])
    await conn.execute(
        """
        INSERT INTO llm_in_flight (tenant_id, provider_id, process, calls)
        SELECT x.tenant_id, x.provider_id, %s, x.calls
        FROM jsonb_to_recordset(%s) AS x(tenant_id uuid, provider_id uuid, calls integer)
        """,
        [process, Jsonb(rows)],
    )
