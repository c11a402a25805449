"""SQL of the gateway: routes of model names, the models a tenant may name, aliases
(the functions of gateway/sql/routing.sql do the resolving)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection

# Each deployment of a name, in the order to try, with its provider's row and the context
# window of its model where one is known (the tenant's model of that provider first, then
# the provider's vendor's, then any built-in one of that name), and whether the tenant
# keeps the content of calls (its settings' llm_content: "drop" keeps none).
ROUTE = """
    SELECT r.model AS routed_model, r.alias, r.deployment, r.weight::float8 AS route_weight,
           r.strategy, w.context_window,
           (SELECT t.settings->>'llm_content' FROM tenants t
            WHERE t.id = app_current_tenant()) AS llm_content,
           p.id, p.tenant_id, p.tenant_id IS NULL AS builtin, p.name, p.type, p.base_url,
           p.api_key_ciphertext IS NOT NULL AS has_api_key, p.model, p.weight, p.enabled,
           p.config, p.health_status, p.response_time, p.consecutive_failures, p.last_error,
           p.last_checked_at, p.created_at, p.updated_at, p.api_key_ciphertext
    FROM gateway_route(%s)
         WITH ORDINALITY AS r(provider_id, model, alias, deployment, weight, strategy, n)
    JOIN llm_providers p ON p.id = r.provider_id
    LEFT JOIN LATERAL (
        SELECT m.context_window FROM llm_models m
        WHERE m.name = r.model AND m.context_window IS NOT NULL
          AND (m.provider = p.name OR m.tenant_id IS NULL)
        ORDER BY m.provider = p.name DESC, m.tenant_id IS NULL,
                 m.provider = CASE p.type WHEN 'openai_compatible' THEN 'openai'
                                          ELSE p.type END DESC
        LIMIT 1
    ) w ON true
    ORDER BY r.n
"""


async def route(conn: Connection, name: str) -> list[dict[str, Any]]:
    cur = await conn.execute(ROUTE, [name], prepare=True)
    return await cur.fetchall()


async def models(conn: Connection) -> list[dict[str, Any]]:
    cur = await conn.execute("SELECT id, owned_by, created FROM gateway_models()")
    return await cur.fetchall()


ALIAS_COLUMNS = "id, name, strategy, deployments, created_at, updated_at"


async def insert_alias(conn: Connection, values: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        INSERT INTO gateway_aliases (tenant_id, name, strategy, deployments)
        VALUES (app_current_tenant(), %(name)s, %(strategy)s, %(deployments)s)
        RETURNING {ALIAS_COLUMNS}
        """,
        {**values, "deployments": Jsonb(values["deployments"])},
    )
    return await cur.fetchone()


async def list_aliases(conn: Connection) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {ALIAS_COLUMNS} FROM gateway_aliases ORDER BY name")
    return await cur.fetchall()


async def get_alias(conn: Connection, name: str) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {ALIAS_COLUMNS} FROM gateway_aliases WHERE name = %s", [name]
    )
    return await cur.fetchone()


async def delete_alias(conn: Connection, alias_id: UUID) -> bool:
    cur = await conn.execute("DELETE FROM gateway_aliases WHERE id = %s", [alias_id])
    return cur.rowcount == 1
