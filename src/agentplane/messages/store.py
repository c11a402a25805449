"""SQL of messages. Nothing else lives here; the functions it calls are in
messages/sql/messages.sql."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection

CHANNEL = "agentplane_messages"  # also named by messages/sql/messages.sql

# A message's copies' least advanced status; 'unrouted' when it has none (a broadcast
# or a topic nobody listened to when it was sent).
_STATUS = """
    coalesce((SELECT d.status FROM message_deliveries d
              WHERE d.tenant_id = m.tenant_id AND d.message_id = m.id
              ORDER BY array_position(ARRAY['pending', 'leased', 'dead', 'expired', 'acked'],
                                      d.status)
              LIMIT 1), 'unrouted')"""

MESSAGE = f"""
    m.id, m.type, m.priority, m.payload, m.correlation_id, m.reply_to, m.requires_ack,
    m.ttl_s, m.max_retries, m.run_id, m.task_id, m.available_at, m.expires_at, m.created_at,
    m.from_instance_id AS from_instance,
    (SELECT a.slug FROM agents a WHERE a.id = m.from_agent_id) AS from_agent,
    CASE m.to_kind
        WHEN 'agent' THEN jsonb_build_object(
            'agent', (SELECT a.slug FROM agents a WHERE a.id = m.to_agent_id))
        WHEN 'instance' THEN jsonb_build_object('instance', m.to_instance_id)
        WHEN 'topic' THEN jsonb_build_object('topic', m.topic)
        ELSE jsonb_strip_nulls(jsonb_build_object('broadcast', true, 'project', m.project_id))
    END AS "to",
    {_STATUS} AS status"""

DELIVERY = """
    d.id, (SELECT a.slug FROM agents a WHERE a.id = d.agent_id) AS agent, d.instance_id,
    d.status, d.attempts, d.max_retries, d.leased_to, d.lease_until, d.last_error, d.history,
    d.delivered_at, d.acked_at, d.expires_at"""


async def agents_by_slug(conn: Connection, slugs: list[str]) -> dict[str, UUID]:
    cur = await conn.execute("SELECT slug, id FROM agents WHERE slug = ANY(%s)", [slugs])
    return {r["slug"]: r["id"] for r in await cur.fetchall()}


async def instances(conn: Connection, ids: list[UUID]) -> dict[UUID, dict[str, Any]]:
    cur = await conn.execute(
        "SELECT i.id, i.agent_id, i.status, a.slug FROM agent_instances i "
        "JOIN agents a ON a.tenant_id = i.tenant_id AND a.id = i.agent_id WHERE i.id = ANY(%s)",
        [ids],
    )
    return {r["id"]: r for r in await cur.fetchall()}


async def runs_found(conn: Connection, run_ids: list[UUID]) -> set[UUID]:
    cur = await conn.execute("SELECT id FROM runs WHERE id = ANY(%s)", [run_ids])
    return {r["id"] for r in await cur.fetchall()}


async def projects_found(conn: Connection, project_ids: list[UUID]) -> set[UUID]:
    cur = await conn.execute("SELECT id FROM projects WHERE id = ANY(%s)", [project_ids])
    return {r["id"] for r in await cur.fetchall()}


async def send(conn: Connection, rows: list[dict[str, Any]]) -> dict[UUID, int]:
    """The messages sent, each with its number of copies."""
    cur = await conn.execute("SELECT id, deliveries FROM messages_send(%s)", [Jsonb(rows)])
    return {r["id"]: r["deliveries"] for r in await cur.fetchall()}


async def get(conn: Connection, message_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {MESSAGE} FROM messages m WHERE m.id = %s", [message_id])
    return await cur.fetchone()


async def deliveries(conn: Connection, message_id: UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {DELIVERY} FROM message_deliveries d WHERE d.message_id = %s ORDER BY d.seq",
        [message_id],
    )
    return await cur.fetchall()


async def list_(
    conn: Connection, *, agent: UUID | None, type_: str | None, status: str | None,
    correlation_id: str | None, after: tuple[datetime, UUID] | None, limit: int,
    sender: UUID | None = None, recipient: UUID | None = None,
    between: tuple[UUID | None, UUID | None] = (None, None),
) -> list[dict[str, Any]]:
    """Newest first; `agent`: sent by it or to it (or one of its copies is for it);
    `sender` and `recipient` are each one side of that."""
    cur = await conn.execute(
        f"""
        SELECT {MESSAGE} FROM messages m
        WHERE (%(agent)s::uuid IS NULL OR m.from_agent_id = %(agent)s OR m.to_agent_id = %(agent)s
               OR EXISTS (SELECT 1 FROM message_deliveries d
                          WHERE d.message_id = m.id AND d.agent_id = %(agent)s))
          AND (%(sender)s::uuid IS NULL OR m.from_agent_id = %(sender)s)
          AND (%(recipient)s::uuid IS NULL OR m.to_agent_id = %(recipient)s
               OR EXISTS (SELECT 1 FROM message_deliveries d
                          WHERE d.message_id = m.id AND d.agent_id = %(recipient)s))
          AND (%(type)s::text IS NULL OR m.type = %(type)s)
          AND (%(corr)s::text IS NULL OR m.correlation_id = %(corr)s)
          AND (%(status)s::text IS NULL OR EXISTS (
                SELECT 1 FROM message_deliveries d
                WHERE d.message_id = m.id AND d.status = %(status)s))
          AND (%(at)s::timestamptz IS NULL OR (m.created_at, m.id) < (%(at)s, %(id)s::uuid))
          AND (%(lo)s::uuid IS NULL OR m.id BETWEEN %(lo)s AND %(hi)s)
        ORDER BY m.created_at DESC, m.id DESC LIMIT %(limit)s
        """,
        {"agent": agent, "sender": sender, "recipient": recipient, "type": type_,
         "corr": correlation_id, "status": status, "lo": between[0], "hi": between[1],
         "at": after[0] if after else None, "id": after[1] if after else None, "limit": limit},
    )
    return await cur.fetchall()


async def counts(conn: Connection) -> dict[str, int]:
    """Copies by status: expired ones are counted here, never delivered."""
    cur = await conn.execute(
        "SELECT status, count(*) AS n FROM message_deliveries GROUP BY status")
    return {r["status"]: r["n"] for r in await cur.fetchall()}


async def receive(
    conn: Connection, agent_id: UUID, instance_id: UUID, limit: int, lease_s: float,
    correlation_id: str | None,
) -> list[dict[str, Any]]:
    """The copies leased, with their messages, by priority then sending. Two statements:
    the function leases copies of messages committed after the statement that calls it
    began (its own statements see them), which that statement's snapshot could not
    join with; the second statement's snapshot sees every message it leased."""
    cur = await conn.execute(
        "SELECT delivery_id, message_id, attempt, lease_until"
        " FROM messages_receive(%s, %s, %s::integer, %s::real, %s::text)",
        [agent_id, instance_id, limit, lease_s, correlation_id], prepare=True,
    )
    taken = await cur.fetchall()
    if not taken:
        return []
    cur = await conn.execute(
        """
        SELECT m.id, m.type, m.priority, m.payload, m.correlation_id, m.reply_to,
               m.from_instance_id AS from_instance,
               (SELECT a.slug FROM agents a WHERE a.id = m.from_agent_id) AS from_agent,
               m.run_id, m.task_id, m.created_at, m.from_agent_id, m.to_agent_id
        FROM messages m WHERE m.tenant_id = app_current_tenant() AND m.id = ANY (%s)
        """,
        [[t["message_id"] for t in taken]], prepare=True,
    )
    messages = {m["id"]: m for m in await cur.fetchall()}
    rows = [{**messages[t["message_id"]], "delivery_id": t["delivery_id"],
             "attempt": t["attempt"], "lease_until": t["lease_until"]} for t in taken]
    return sorted(rows, key=lambda r: (-r["priority"], r["created_at"]))


async def ack(conn: Connection, message_ids: list[UUID], instance_id: UUID) -> list[UUID]:
    cur = await conn.execute("SELECT message_id FROM messages_ack(%s, %s)",
                             [message_ids, instance_id])
    return [r["message_id"] for r in await cur.fetchall()]


async def nack(
    conn: Connection, message_id: UUID, instance_id: UUID, error: str, delay_s: float | None
) -> str | None:
    cur = await conn.execute("SELECT messages_nack(%s, %s, %s, %s::real) AS status",
                             [message_id, instance_id, error, delay_s])
    return (await cur.fetchone())["status"]


async def copy_states(conn: Connection, message_id: UUID) -> list[dict[str, Any]]:
    cur = await conn.execute(
        "SELECT status, leased_to FROM message_deliveries WHERE message_id = %s",
        [message_id])
    return await cur.fetchall()


async def dead(
    conn: Connection, after: tuple[datetime, UUID] | None, limit: int,
    between: tuple[UUID | None, UUID | None] = (None, None),
) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"""
        SELECT d.id AS delivery_id, d.agent_id, d.instance_id, d.attempts, d.last_error,
               d.history, d.created_at, (SELECT a.slug FROM agents a WHERE a.id = d.agent_id)
               AS agent, to_jsonb(x) AS message
        FROM message_deliveries d
        CROSS JOIN LATERAL (SELECT {MESSAGE} FROM messages m
                            WHERE m.tenant_id = d.tenant_id AND m.id = d.message_id) x
        WHERE d.status = 'dead'
          AND (%(at)s::timestamptz IS NULL OR (d.created_at, d.id) < (%(at)s, %(id)s::uuid))
          AND (%(lo)s::uuid IS NULL OR d.id BETWEEN %(lo)s AND %(hi)s)
        ORDER BY d.created_at DESC, d.id DESC LIMIT %(limit)s
        """,
        {"at": after[0] if after else None, "id": after[1] if after else None, "limit": limit,
         "lo": between[0], "hi": between[1]},
    )
    return await cur.fetchall()


async def requeue(conn: Connection, delivery_id: UUID) -> UUID | None:
    cur = await conn.execute("SELECT message_id FROM messages_requeue(%s)", [delivery_id])
    row = await cur.fetchone()
    return row["message_id"] if row else None


async def delivery_status(conn: Connection, delivery_id: UUID) -> str | None:
    cur = await conn.execute("SELECT status FROM message_deliveries WHERE id = %s",
                             [delivery_id])
    row = await cur.fetchone()
    return row["status"] if row else None


async def presence(conn: Connection, stale_s: float) -> list[UUID]:
    cur = await conn.execute("SELECT instance_id FROM messages_presence(%s::real)", [stale_s])
    return [r["instance_id"] for r in await cur.fetchall()]


async def subscribe(conn: Connection, instance_id: UUID, topic: str) -> None:
    await conn.execute(
        "INSERT INTO message_subscriptions (tenant_id, instance_id, topic) "
        "VALUES (app_current_tenant(), %s, %s) ON CONFLICT DO NOTHING", [instance_id, topic])


async def unsubscribe(conn: Connection, instance_id: UUID, topic: str) -> bool:
    cur = await conn.execute(
        "DELETE FROM message_subscriptions WHERE instance_id = %s AND topic = %s",
        [instance_id, topic])
    return cur.rowcount == 1


async def topics(conn: Connection, instance_id: UUID) -> list[str]:
    cur = await conn.execute(
        "SELECT topic FROM message_subscriptions WHERE instance_id = %s ORDER BY topic",
        [instance_id])
    return [r["topic"] for r in await cur.fetchall()]


async def record_interaction(conn: Connection, row: dict[str, Any]) -> None:
    """An exchange between two agents in a run (Tokyo-IA's agent_interactions)."""
    await conn.execute(
        """
        INSERT INTO agent_interactions (tenant_id, run_id, task_id, from_agent_id, to_agent_id,
                                        interaction_type, message, payload)
        VALUES (app_current_tenant(), %(run_id)s, %(task_id)s, %(from_agent_id)s,
                %(to_agent_id)s, 'collaboration', %(message)s, %(payload)s)
        """,
        {**row, "payload": Jsonb(row["payload"])},
    )
