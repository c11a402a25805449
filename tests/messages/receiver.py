"""A receiving process for the reliability tests: instances of one agent, each an Inbox,
recording each message's effect and acking it in one transaction (the message id is the
effect's key), so an effect exists exactly when its ack committed.

    python -m tests.messages.receiver TENANT AGENT INSTANCE[,INSTANCE...] [--no-ack]
"""

from __future__ import annotations

import asyncio
import sys
import uuid

import psycopg

from agentplane.config import get_settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database
from agentplane.errors import DatabaseUnavailable
from agentplane.messages.inbox import Inbox

EFFECTS_DDL = """
CREATE TABLE IF NOT EXISTS message_effects (
    message_id uuid NOT NULL, instance_id uuid NOT NULL, at timestamptz DEFAULT now());
GRANT SELECT, INSERT, DELETE ON message_effects TO PUBLIC;
"""


def install_effects(owner_conninfo: str) -> None:
    with psycopg.connect(owner_conninfo, autocommit=True) as conn:
        conn.execute(EFFECTS_DDL)


async def serve(db: Database, tenant: uuid.UUID, agent: str, instance: uuid.UUID,
                ack: bool) -> None:
    while True:
        try:
            async with Inbox(db, tenant, agent, instance, batch=100, lease_s=1) as inbox:
                while True:
                    got = await inbox.receive(wait_s=5)
                    if not got or not ack:
                        continue
                    ids = [m.id for m in got]
                    async with db.tenant_connection(tenant) as conn:
                        await conn.execute(
                            "INSERT INTO message_effects (message_id, instance_id)"
                            " SELECT unnest(%s::uuid[]), %s", [ids, instance])
                        acked = set(await inbox.ack(*got, conn=conn))
                        lost = [i for i in ids if i not in acked]  # leases that passed
                        if lost:
                            await conn.execute(
                                "DELETE FROM message_effects WHERE instance_id = %s"
                                " AND message_id = ANY(%s)", [instance, lost])
        except (DatabaseUnavailable, psycopg.OperationalError):
            await asyncio.sleep(0.5)  # the database restarts: begin again


async def main(argv: list[str]) -> None:
    tenant, agent, instances = uuid.UUID(argv[0]), argv[1], argv[2].split(",")
    conf = get_settings()
    db = Database(conf, ep.resolve(conf, start=False))
    await db.open()
    await asyncio.gather(*(serve(db, tenant, agent, uuid.UUID(i), "--no-ack" not in argv)
                           for i in instances))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
