"""SQL of agents and agent instances. Nothing else lives here."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.errors import translate_errors
from agentplane.db.pool import Connection

# An agent's totals are its folded columns plus the deltas its finished tasks appended
# since the last fold (see the runtime store): exact without a hot row per agent.
COLUMNS = """
    id AS uid, slug AS id, name, role, model, specialties, instructions, personality_emoji,
    tools, status, version, project_id,
    total_tasks_completed + p_completed AS total_tasks_completed,
    total_tasks_failed + p_failed AS total_tasks_failed,
    total_tokens_used + p_tokens AS total_tokens_used,
    total_cost_usd + p_cost AS total_cost_usd,
    (total_latency_ms + p_latency)::float8
        / greatest(total_tasks_completed + total_tasks_failed + p_completed + p_failed, 1)
        AS average_latency_ms,
    CASE WHEN total_tasks_completed + total_tasks_failed + p_completed + p_failed = 0 THEN 100.0
         ELSE 100.0 * (total_tasks_completed + p_completed)
              / (total_tasks_completed + total_tasks_failed + p_completed + p_failed)
    END::float8 AS success_rate,
    metadata, created_at, updated_at
"""


def _pending(tenant: str, agent: str) -> str:
    """The unfolded deltas of an agent (SQL expressions for its keys), as one row."""
    return f"""
    (SELECT coalesce(sum(d.completed), 0) AS p_completed, coalesce(sum(d.failed), 0) AS p_failed,
            coalesce(sum(d.tokens), 0) AS p_tokens, coalesce(sum(d.cost_usd), 0) AS p_cost,
            coalesce(sum(d.latency_ms), 0) AS p_latency
     FROM agent_total_deltas d
     WHERE d.tenant_id = {tenant} AND d.agent_id = {agent}) p
    """


FROM = f"agents a CROSS JOIN LATERAL {_pending('a.tenant_id', 'a.id')}"


async def insert(conn: Connection, v: dict[str, Any]) -> dict[str, Any]:
    """The new agent; Conflict when its slug is taken (translated here for the service
    to name it)."""
    with translate_errors():
        return await _insert(conn, v)


async def _insert(conn: Connection, v: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        WITH a AS (
            INSERT INTO agents (tenant_id, slug, name, role, model, specialties, instructions,
                                personality_emoji, tools, status, project_id, metadata)
            VALUES (app_current_tenant(), %(id)s, %(name)s, %(role)s, %(model)s,
                    %(specialties)s, %(instructions)s, %(personality_emoji)s, %(tools)s,
                    %(status)s, %(project_id)s, %(metadata)s)
            RETURNING *
        )
        SELECT {COLUMNS} FROM a, (SELECT 0 AS p_completed, 0 AS p_failed, 0 AS p_tokens,
                                         0 AS p_cost, 0 AS p_latency) p
        """,
        {**v, "metadata": Jsonb(v["metadata"])},
    )
    return await cur.fetchone()


async def get(conn: Connection, slug: str, *, lock: bool = False) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM {FROM} WHERE slug = %s" + (" FOR UPDATE OF a" if lock else ""),
        [slug],
    )
    return await cur.fetchone()


async def get_many(conn: Connection, slugs: list[str]) -> list[dict[str, Any]]:
    cur = await conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE slug = ANY(%s)", [slugs])
    return await cur.fetchall()


async def get_by_uid(conn: Connection, uid: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {COLUMNS} FROM {FROM} WHERE id = %s", [uid])
    return await cur.fetchone()


async def slugs(conn: Connection) -> set[str]:
    cur = await conn.execute("SELECT slug FROM agents")
    return {r["slug"] for r in await cur.fetchall()}


async def list_(conn: Connection, status: str | None) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {COLUMNS} FROM {FROM} WHERE %(status)s::text IS NULL OR status = %(status)s "
        "ORDER BY slug",
        {"status": status},
    )
    return await cur.fetchall()


async def update(conn: Connection, uid: UUID, values: dict[str, Any]) -> dict[str, Any]:
    if "metadata" in values:
        values = {**values, "metadata": Jsonb(values["metadata"])}
    sets = ", ".join(f"{column} = %({column})s" for column in values)
    pending = _pending("app_current_tenant()", "%(uid)s")
    cur = await conn.execute(
        f"UPDATE agents a SET {sets}, version = version + 1 FROM {pending} "
        f"WHERE a.id = %(uid)s RETURNING {COLUMNS}",
        {**values, "uid": uid},
    )
    return await cur.fetchone()


async def delete(conn: Connection, uid: UUID) -> None:
    await conn.execute("DELETE FROM agents WHERE id = %s", [uid])


async def is_used(conn: Connection, uid: UUID) -> bool:
    cur = await conn.execute(
        "SELECT EXISTS (SELECT 1 FROM tasks WHERE agent_id = %s) AS used", [uid]
    )
    return (await cur.fetchone())["used"]


async def denied_tools(conn: Connection) -> list[str]:
    """Tools the tenant's settings forbid (settings.tools.denied)."""
    cur = await conn.execute(
        "SELECT coalesce(settings #> '{tools,denied}', '[]') AS denied FROM tenants "
        "WHERE id = app_current_tenant()"
    )
    row = await cur.fetchone()
    denied = row["denied"] if row else []
    return [str(t) for t in denied] if isinstance(denied, list) else []


# -- agent instances ---------------------------------------------------------------------

INSTANCE_COLUMNS = """
    id, agent_id, instance_key, status, capabilities, metadata, heartbeat_at, started_at,
    stopped_at
"""


async def insert_instance(conn: Connection, agent_uid: UUID, v: dict[str, Any]) -> dict[str, Any]:
    cur = await conn.execute(
        f"""
        INSERT INTO agent_instances (tenant_id, agent_id, instance_key, capabilities, metadata,
                                     heartbeat_at)
        VALUES (app_current_tenant(), %(agent)s, %(instance_key)s, %(capabilities)s,
                %(metadata)s, now())
        RETURNING {INSTANCE_COLUMNS}
        """,
        {**v, "agent": agent_uid, "metadata": Jsonb(v["metadata"])},
    )
    return await cur.fetchone()


async def get_instance(
    conn: Connection, agent_uid: UUID, instance_id: UUID
) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"SELECT {INSTANCE_COLUMNS} FROM agent_instances WHERE agent_id = %s AND id = %s",
        [agent_uid, instance_id],
    )
    return await cur.fetchone()


async def list_instances(conn: Connection, agent_uid: UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {INSTANCE_COLUMNS} FROM agent_instances WHERE agent_id = %s ORDER BY started_at",
        [agent_uid],
    )
    return await cur.fetchall()


async def set_instance_status(
    conn: Connection, instance_id: UUID, status: str, reason: str | None
) -> dict[str, Any] | None:
    # The history trigger reads the reason from the transaction.
    await conn.execute("SELECT set_config('app.status_reason', %s, true)", [reason or ""])
    cur = await conn.execute(
        f"""
        UPDATE agent_instances SET status = %(status)s, heartbeat_at = now(),
            stopped_at = CASE WHEN %(status)s IN ('stopped', 'failed') THEN now() END
        WHERE id = %(id)s RETURNING {INSTANCE_COLUMNS}
        """,
        {"status": status, "id": instance_id},
    )
    return await cur.fetchone()


async def heartbeat(conn: Connection, instance_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        # An instance marked offline for its silence is back once it beats again.
        "UPDATE agent_instances SET heartbeat_at = now(), "
        "status = CASE WHEN status = 'offline' THEN 'idle' ELSE status END WHERE id = %s "
        f"AND status NOT IN ('stopped', 'failed') RETURNING {INSTANCE_COLUMNS}",
        [instance_id],
    )
    return await cur.fetchone()


async def instance_history(conn: Connection, instance_id: UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT status, reason, created_at FROM agent_instance_status_history "
        "WHERE instance_id = %s ORDER BY id",
        [instance_id],
    )
    return await cur.fetchall()
