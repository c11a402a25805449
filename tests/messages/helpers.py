"""Agents, instances and sending for the message tests, over HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from agentplane.db.pool import Database
from tests.conftest import TenantContext
from tests.runtime.helpers import add_agents, agent


async def instances(
    client: httpx.AsyncClient, ctx: TenantContext, slug: str, n: int = 1
) -> list[uuid.UUID]:
    """Agent `slug` (made if missing) with `n` new live instances."""
    if (await client.get(f"/v1/agents/{slug}", headers=ctx.headers)).status_code == 404:
        await add_agents(client, ctx, agent(slug))
    made = []
    for _ in range(n):
        r = await client.post(f"/v1/agents/{slug}/instances",
                              json={"instance_key": f"{slug}-{uuid.uuid4().hex[:8]}"},
                              headers=ctx.headers)
        assert r.status_code == 201, r.text
        made.append(uuid.UUID(r.json()["id"]))
    return made


async def send(client: httpx.AsyncClient, ctx: TenantContext, **body: Any) -> dict[str, Any]:
    body.setdefault("type", "note")
    r = await client.post("/v1/messages", json=body, headers=ctx.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def receive(client: httpx.AsyncClient, ctx: TenantContext, slug: str,
                  instance: uuid.UUID, **params: Any) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/agents/{slug}/instances/{instance}/messages", params=params,
                         headers=ctx.headers)
    assert r.status_code == 200, r.text
    return r.json()


async def ack(client: httpx.AsyncClient, ctx: TenantContext, message_id: str,
              instance: uuid.UUID) -> httpx.Response:
    return await client.post(f"/v1/messages/{message_id}/ack",
                             json={"instance": str(instance)}, headers=ctx.headers)


async def rows(db: Database, query: str, *params: Any) -> list[dict[str, Any]]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(query, list(params))
        return await cur.fetchall()


async def age(db: Database, message_id: str, seconds: float) -> None:
    """Move a message's copies `seconds` into the past: their leases, due and expiry
    times pass as if that long had gone by, whatever the clock says."""
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE message_deliveries SET available_at = available_at - make_interval(secs => %s),"
            " expires_at = expires_at - make_interval(secs => %s),"
            " lease_until = lease_until - make_interval(secs => %s) WHERE message_id = %s",
            [seconds, seconds, seconds, message_id])
