"""Agents over HTTP: what an agent may not be, refused in the user's terms, and nothing
written."""

from __future__ import annotations

import pytest

from tests.runtime.helpers import add_agents, agent, count, tenant


@pytest.fixture
async def ctx(db, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("alpha"))
    return ctx


async def test_bad_agents_are_refused(db, client, ctx):
    r = await client.post("/v1/agents", json=agent("beta", tools=["rm_rf"]), headers=ctx.headers)
    assert r.status_code == 422 and "unknown tool: rm_rf" in r.json()["detail"]
    r = await client.post("/v1/agents", json=agent("Bad Slug"), headers=ctx.headers)
    assert r.status_code == 422
    r = await client.post("/v1/agents", json=agent("alpha"), headers=ctx.headers)
    assert r.status_code == 409
    # In the user's terms: the field and the value, not the database's constraint.
    assert r.json()["detail"] == "an agent with id 'alpha' already exists"
    assert r.json()["errors"] == [{"field": "id", "value": "alpha", "message": "taken"}]
    async with db.admin_connection() as conn:
        await conn.execute(
            'UPDATE tenants SET settings = \'{"tools": {"denied": ["calculator"]}}\' WHERE id = %s',
            [ctx.tenant_id],
        )
    r = await client.post(
        "/v1/agents", json=agent("gamma", tools=["calculator"]), headers=ctx.headers
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "tool not allowed for this tenant: calculator"
    assert await count(db, "agents", ctx.tenant_id) == 1
