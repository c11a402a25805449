"""AutoSDLC's agent_messages and message_queue, as the seed names and types them, over
the bus: its queries (unprocessed messages per destination, the pending queue by
schedule) run unchanged, under row-level security."""

from __future__ import annotations

from tests.messages.helpers import ack, instances, receive, send
from tests.runtime.helpers import tenant


async def columns(db, view: str) -> dict[str, str]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = 'autosdlc' AND table_name = %s", [view])
        return {r["column_name"]: r["data_type"] for r in await cur.fetchall()}


async def test_the_seed_tables_answer_its_queries(db, client):
    ctx, other = await tenant(db), await tenant(db)
    (a,) = await instances(client, ctx, "dest")
    done = await send(client, ctx, to={"agent": "dest"}, type="review", correlation_id="k1",
                      ttl_s=600, payload={"n": 1})
    waiting = await send(client, ctx, to={"agent": "dest"}, type="review", delay_s=120)
    await receive(client, ctx, "dest", a)
    assert (await ack(client, ctx, done["id"], a)).status_code == 204
    await instances(client, other, "dest")
    await send(client, other, to={"agent": "dest"}, type="theirs")

    assert await columns(db, "agent_messages") == {
        "id": "uuid", "message_id": "character varying", "source_agent_id": "uuid",
        "destination_agent_id": "uuid", "destination_type": "character varying",
        "message_type": "character varying", "priority": "integer", "payload": "jsonb",
        "correlation_id": "character varying", "requires_ack": "boolean",
        "ack_received_at": "timestamp with time zone", "ttl": "integer",
        "retry_count": "integer", "max_retries": "integer",
        "created_at": "timestamp with time zone", "delivered_at": "timestamp with time zone",
        "processed_at": "timestamp with time zone"}
    async with db.tenant_connection(ctx.tenant_id) as conn:
        cur = await conn.execute(
            "SELECT message_id, destination_type, message_type, ttl, retry_count"
            " FROM autosdlc.agent_messages WHERE processed_at IS NULL"
            " ORDER BY destination_agent_id, created_at")
        assert await cur.fetchall() == [{
            "message_id": waiting["id"], "destination_type": "agent",
            "message_type": "review", "ttl": None, "retry_count": 0}]
        cur = await conn.execute(
            "SELECT message_id::text, status, attempts FROM autosdlc.message_queue"
            " WHERE status = 'pending' ORDER BY scheduled_for")
        assert await cur.fetchall() == [
            {"message_id": waiting["id"], "status": "pending", "attempts": 0}]
        cur = await conn.execute(
            "SELECT count(*) AS n, count(ack_received_at) AS acked FROM autosdlc.agent_messages")
        assert await cur.fetchone() == {"n": 2, "acked": 1}, "the other tenant's is not seen"
