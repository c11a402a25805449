"""SQL of the gateway: routes of model names, the models a tenant may name, aliases
(the functions of gateway/sql/routing.sql do the resolving)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection
from agentplane.llm import in_flight
from agentplane.llm.store import IN_FLIGHT_FRESH_S, PRICE

# Each deployment of a name, in the order to try, with its provider's row and the context
# window of its model where one is known (the tenant's model of that provider first, then
# the provider's vendor's, then any built-in one of that name), and whether the tenant
# keeps the content of calls (its settings' llm_content: "drop" keeps none) and how long
# it keeps answers in its response cache (llm_cache_ttl_s: none when unset), and the
# price of a million tokens in and out now (for the strategy `cost`), and the calls other
# processes have in flight on the provider (for `least_in_flight`: llm/in_flight.py).
_FAMILY = "CASE pr.type WHEN 'openai_compatible' THEN 'openai' ELSE pr.type END"
ROUTE = """
    SELECT (price.input_per_mtok + price.output_per_mtok)::float8 AS route_price,
           (SELECT coalesce(sum(f.calls), 0)::int FROM llm_in_flight f
            WHERE f.tenant_id = app_current_tenant() AND f.provider_id = pr.id
              AND f.process <> %(process)s
              AND f.at > now() - make_interval(secs => %(fresh)s)) AS route_in_flight,
           r.model AS routed_model, r.alias, r.deployment, r.weight::float8 AS route_weight,
           r.strategy, w.context_window,
           t.settings->>'llm_content' AS llm_content,
           CASE WHEN jsonb_typeof(t.settings->'llm_cache_ttl_s') = 'number'
                THEN (t.settings->>'llm_cache_ttl_s')::float8 END AS llm_cache_ttl_s,
           pr.id, pr.tenant_id, pr.tenant_id IS NULL AS builtin, pr.name, pr.type, pr.base_url,
           pr.api_key_ciphertext IS NOT NULL AS has_api_key, pr.model, pr.weight, pr.enabled,
           pr.config, pr.health_status, pr.response_time, pr.consecutive_failures, pr.last_error,
           pr.last_checked_at, pr.created_at, pr.updated_at, pr.api_key_ciphertext
    FROM gateway_route(%(name)s)
         WITH ORDINALITY AS r(provider_id, model, alias, deployment, weight, strategy, n)
    JOIN llm_providers pr ON pr.id = r.provider_id
    LEFT JOIN tenants t ON t.id = app_current_tenant()
    LEFT JOIN LATERAL (
        SELECT m.context_window FROM llm_models m
        WHERE m.name = r.model AND m.context_window IS NOT NULL
          AND (m.provider = pr.name OR m.tenant_id IS NULL)
        ORDER BY m.provider = pr.name DESC, m.tenant_id IS NULL,
                 m.provider = CASE pr.type WHEN 'openai_compatible' THEN 'openai'
                                          ELSE pr.type END DESC
        LIMIT 1
    ) w ON true
    LEFT JOIN LATERAL ({price}) price ON true
    ORDER BY r.n
""".format(price=PRICE.format(model="r.model", provider="pr.name", family=_FAMILY, at="now()"))


async def route(conn: Connection, name: str) -> list[dict[str, Any]]:
    cur = await conn.execute(
        ROUTE, {"name": name, "process": in_flight.PROCESS, "fresh": IN_FLIGHT_FRESH_S},
        prepare=True,
    )
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


# -- the response cache (gateway/sql/cache.sql) ---------------------------------------------


async def cached_answer(conn: Connection, key: bytes) -> dict[str, Any] | None:
    cur = await conn.execute(
        "SELECT response FROM gateway_cache WHERE tenant_id = app_current_tenant() "
        "AND key = %s AND expires_at > now()",
        [key], prepare=True,
    )
    row = await cur.fetchone()
    return row["response"] if row else None


async def keep_answer(
    conn: Connection, key: bytes, model: str, response: dict[str, Any], ttl_s: float
) -> None:
    await conn.execute(
        """
        INSERT INTO gateway_cache (tenant_id, key, model, response, expires_at)
        VALUES (app_current_tenant(), %(key)s, %(model)s, %(response)s,
                now() + make_interval(secs => %(ttl)s))
        ON CONFLICT (tenant_id, key) DO UPDATE
            SET model = excluded.model, response = excluded.response,
                created_at = now(), expires_at = excluded.expires_at
        """,
        {"key": key, "model": model, "response": Jsonb(response), "ttl": ttl_s},
        prepare=True,
    )
