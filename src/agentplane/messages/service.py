"""Messages: send (checked, then one statement), read, receive (a lease), ack, nack,
dead messages and requeue, presence, topics. Every function takes the caller's tenant
transaction; waiting for messages is in `inbox`."""

from __future__ import annotations

import json
import uuid
from typing import Any
from uuid import UUID

from agentplane import ids as short_ids
from agentplane import pagination
from agentplane.agents import service as agents
from agentplane.db.pool import Connection
from agentplane.errors import Conflict, NotFound, PayloadTooLarge
from agentplane.events.emit import emit, event
from agentplane.events.types import MESSAGE_RECEIVED, MESSAGE_SENT
from agentplane.messages import store
from agentplane.messages.models import (
    DeadMessage,
    DeadPage,
    Delivery,
    Message,
    MessageIn,
    MessagePage,
    Received,
)

MAX_PAYLOAD_BYTES = 256 * 1024
LIVE = ("starting", "idle", "busy")


async def send(conn: Connection, tenant_id: UUID, messages: list[MessageIn]) -> dict[UUID, int]:
    """Send in the caller's transaction (delivered only if it commits): each message's
    id with its number of copies. Every destination and sender is checked first, so a
    bad one sends nothing."""
    for m in messages:
        size = len(json.dumps(m.payload, separators=(",", ":")))
        if size > MAX_PAYLOAD_BYTES:
            raise PayloadTooLarge(
                f"payload is {size} bytes; a message's payload is at most {MAX_PAYLOAD_BYTES}")
    slugs = sorted({m.to.agent for m in messages if m.to.agent})
    agent_ids = await store.agents_by_slug(conn, slugs) if slugs else {}
    for slug in slugs:
        if slug not in agent_ids:
            raise NotFound(f"agent {slug} not found")
    named = {i for m in messages for i in (m.to.instance, m.reply_to,
                                            m.from_.instance if m.from_ else None) if i}
    found = await store.instances(conn, sorted(named)) if named else {}
    missing = sorted(named - set(found), key=str)
    if missing:
        raise NotFound(f"agent instance {missing[0]} not found")
    await _check_found(conn, {m.run_id for m in messages if m.run_id}, store.runs_found, "run")
    await _check_found(conn, {m.to.project for m in messages if m.to.project},
                       store.projects_found, "project")
    rows = [_row(m, agent_ids, found) for m in messages]
    sent = await store.send(conn, rows)
    for m, row in zip(messages, rows, strict=True):
        if m.run_id is not None:
            await emit(conn, tenant_id, m.run_id, [event(
                MESSAGE_SENT, task_id=m.task_id, message=m.type, message_id=row["id"],
                to=m.to.model_dump(exclude_none=True), correlation_id=m.correlation_id)])
    return sent


async def _check_found(conn: Connection, ids: set[UUID], lookup: Any, what: str) -> None:
    if ids:
        missing = ids - await lookup(conn, sorted(ids))
        if missing:
            raise NotFound(f"{what} {sorted(missing, key=str)[0]} not found")


def _row(m: MessageIn, agent_ids: dict[str, UUID], found: dict[UUID, dict]) -> dict[str, Any]:
    sender = found[m.from_.instance] if m.from_ else None
    to_agent = (agent_ids[m.to.agent] if m.to.agent
                else found[m.to.instance]["agent_id"] if m.to.instance else None)
    return {
        "id": str(uuid.uuid4()), "project_id": m.to.project,
        "from_agent_id": sender["agent_id"] if sender else None,
        "from_instance_id": m.from_.instance if m.from_ else None,
        "to_kind": m.to.kind, "to_agent_id": to_agent, "to_instance_id": m.to.instance,
        "topic": m.to.topic, "type": m.type, "priority": m.priority, "payload": m.payload,
        "correlation_id": m.correlation_id, "reply_to": m.reply_to,
        "requires_ack": m.requires_ack, "ttl_s": m.ttl_s, "max_retries": m.max_retries,
        "run_id": m.run_id, "task_id": m.task_id, "delay_s": m.delay_s,
    }


async def send_one(conn: Connection, tenant_id: UUID, body: MessageIn) -> Message:
    sent = await send(conn, tenant_id, [body])
    return await get(conn, next(iter(sent)))


async def get(conn: Connection, message_id: UUID) -> Message:
    row = await store.get(conn, message_id)
    if row is None:
        raise NotFound(f"message {message_id} not found")
    copies = [Delivery.model_validate(d) for d in await store.deliveries(conn, message_id)]
    return Message.model_validate({**row, "deliveries": copies})


async def list_(
    conn: Connection, *, agent: str | None = None, type_: str | None = None,
    status: str | None = None, correlation_id: str | None = None, cursor: str | None = None,
    limit: int = 50, sender: str | None = None, recipient: str | None = None,
    id_prefix: str | None = None,
) -> MessagePage:
    """`agent`: sent by or to it; `sender`, `recipient`: by it, to it (each an agent's
    slug, an unknown one not found)."""
    ids = {k: (await agents.get(conn, v)).uid if v else None
           for k, v in (("agent", agent), ("sender", sender), ("recipient", recipient))}
    after = pagination.decode(cursor) if cursor else None
    rows = await store.list_(conn, **ids, type_=type_, status=status,
                             correlation_id=correlation_id, after=after, limit=limit + 1,
                             between=short_ids.optional_bounds(id_prefix, "message"))
    items = [Message.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return MessagePage(items=items, next_cursor=pagination.encode(
        items[-1].created_at, items[-1].id) if more else None)


async def receiver(conn: Connection, slug: str, instance_id: UUID) -> UUID:
    """The agent's id, once its instance is checked: it exists and has not stopped."""
    agent = await agents.get(conn, slug)
    found = (await store.instances(conn, [instance_id])).get(instance_id)
    if found is None or found["agent_id"] != agent.uid:
        raise NotFound(f"agent instance {instance_id} of agent {slug} not found")
    if found["status"] in ("stopping", "stopped", "failed"):
        raise Conflict(f"agent instance {instance_id} is {found['status']}")
    return agent.uid


async def receive(
    conn: Connection, tenant_id: UUID, agent_id: UUID, instance_id: UUID, *, limit: int = 10,
    lease_s: float = 30.0, correlation_id: str | None = None,
) -> list[Received]:
    """Lease what is ready now (no waiting). A message of a run is recorded there as
    received, and as an interaction between the two agents."""
    rows = await store.receive(conn, agent_id, instance_id, limit, lease_s, correlation_id)
    for r in rows:
        if r["run_id"] is not None:
            await emit(conn, tenant_id, r["run_id"], [event(
                MESSAGE_RECEIVED, task_id=r["task_id"], message=r["type"], message_id=r["id"],
                instance=instance_id, attempt=r["attempt"])])
            if r["from_agent_id"] is not None:
                await store.record_interaction(conn, {
                    "run_id": r["run_id"], "task_id": r["task_id"],
                    "from_agent_id": r["from_agent_id"], "to_agent_id": agent_id,
                    "message": r["type"], "payload": {"message_id": str(r["id"])}})
    return [Received.model_validate(r) for r in rows]


async def ack(conn: Connection, message_ids: list[UUID], instance_id: UUID) -> list[UUID]:
    """Those of `message_ids` whose copy was leased to the instance, now processed."""
    return await store.ack(conn, message_ids, instance_id)


async def ack_one(conn: Connection, message_id: UUID, instance_id: UUID) -> None:
    if not await store.ack(conn, [message_id], instance_id):
        await _not_leased(conn, message_id, instance_id)


async def nack(
    conn: Connection, message_id: UUID, instance_id: UUID, error: str, delay_s: float | None
) -> str:
    """The copy's new status: pending (due again later) or dead (its retries spent)."""
    status = await store.nack(conn, message_id, instance_id, error, delay_s)
    if status is None:
        await _not_leased(conn, message_id, instance_id)
    return status


async def _not_leased(conn: Connection, message_id: UUID, instance_id: UUID) -> None:
    copies = await store.copy_states(conn, message_id)
    if not copies:
        raise NotFound(f"message {message_id} not found")
    mine = [c for c in copies if c["leased_to"] == instance_id]
    if any(c["status"] == "acked" for c in mine):
        raise Conflict(f"message {message_id} was already acked by instance {instance_id}")
    raise Conflict(f"message {message_id} is not leased to instance {instance_id}"
                   " (its lease passed and it went back, or another instance holds it)")


async def dead(conn: Connection, cursor: str | None = None, limit: int = 50,
               id_prefix: str | None = None) -> DeadPage:
    """`id_prefix`: copies whose delivery id starts with it."""
    after = pagination.decode(cursor) if cursor else None
    rows = await store.dead(conn, after, limit + 1,
                            short_ids.optional_bounds(id_prefix, "delivery"))
    items = [DeadMessage.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    return DeadPage(items=items, next_cursor=pagination.encode(
        items[-1].created_at, items[-1].delivery_id) if more else None)


async def requeue(conn: Connection, delivery_id: UUID) -> Message:
    message_id = await store.requeue(conn, delivery_id)
    if message_id is None:
        status = await store.delivery_status(conn, delivery_id)
        if status is None:
            raise NotFound(f"dead message {delivery_id} not found")
        raise Conflict(f"message copy {delivery_id} is {status}, not dead")
    return await get(conn, message_id)


async def presence(conn: Connection, stale_s: float) -> list[UUID]:
    """Mark silent instances offline; what was addressed to them goes to their agent."""
    return await store.presence(conn, stale_s)


async def subscribe(conn: Connection, slug: str, instance_id: UUID, topic: str) -> list[str]:
    await receiver(conn, slug, instance_id)
    await store.subscribe(conn, instance_id, topic)
    return await store.topics(conn, instance_id)


async def unsubscribe(conn: Connection, slug: str, instance_id: UUID, topic: str) -> None:
    await receiver(conn, slug, instance_id)
    if not await store.unsubscribe(conn, instance_id, topic):
        raise NotFound(f"instance {instance_id} is not subscribed to {topic}")


async def counts(conn: Connection) -> dict[str, int]:
    return await store.counts(conn)
