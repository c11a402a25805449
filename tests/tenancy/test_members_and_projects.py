"""Members and projects over HTTP: the last owner stays, only owners make or unmake
owners; projects are created, archived, given members and deleted."""

from __future__ import annotations

import httpx

from agentplane.db.pool import Database
from tests.conftest import make_tenant


async def test_owners_rules(client: httpx.AsyncClient, db: Database) -> None:
    owner = await make_tenant(db)
    r = await client.patch(
        f"/v1/members/{owner.user_id}", headers=owner.headers, json={"role": "admin"}
    )
    assert r.status_code == 409  # the last owner stays
    r = await client.delete(f"/v1/members/{owner.user_id}", headers=owner.headers)
    assert r.status_code == 409
    admin = await make_tenant(db, role="admin")
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT user_id FROM memberships WHERE tenant_id = %s AND role = 'owner'",
            [admin.tenant_id],
        )
        owner_id = (await cur.fetchone())["user_id"]
    r = await client.patch(
        f"/v1/members/{owner_id}", headers=admin.headers, json={"role": "viewer"}
    )
    assert r.status_code == 403
    r = await client.patch(
        f"/v1/members/{admin.user_id}", headers=admin.headers, json={"role": "owner"}
    )
    assert r.status_code == 403


async def test_projects_crud_and_members(client: httpx.AsyncClient, db: Database) -> None:
    ctx = await make_tenant(db)
    r = await client.post(
        "/v1/projects",
        headers=ctx.headers,
        json={"name": "Web", "slug": "web", "description": "site"},
    )
    assert r.status_code == 201
    project = r.json()
    pid = project["id"]
    r = await client.patch(f"/v1/projects/{pid}", headers=ctx.headers, json={"archived": True})
    assert r.json()["archived"] is True
    assert (await client.get("/v1/projects", headers=ctx.headers)).json() == []
    r = await client.get("/v1/projects", headers=ctx.headers, params={"include_archived": True})
    assert [p["id"] for p in r.json()] == [pid]
    r = await client.put(
        f"/v1/projects/{pid}/members/{ctx.user_id}", headers=ctx.headers, json={"role": "admin"}
    )
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = await client.get(f"/v1/projects/{pid}/members", headers=ctx.headers)
    assert [m["user_id"] for m in r.json()] == [str(ctx.user_id)]
    r = await client.delete(f"/v1/projects/{pid}/members/{ctx.user_id}", headers=ctx.headers)
    assert r.status_code == 204
    assert (await client.delete(f"/v1/projects/{pid}", headers=ctx.headers)).status_code == 204
    assert (await client.get(f"/v1/projects/{pid}", headers=ctx.headers)).status_code == 404
