"""Agents over HTTP: create with defaults, read, list by status, update (a new version
each change), delete only while unused; their tools checked; agent instances with their
status history and heartbeats."""

from __future__ import annotations

import uuid

import pytest

from tests.runtime.helpers import add_agents, agent, count, tenant


@pytest.fixture
async def ctx(db, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("alpha"))
    return ctx


async def test_create_read_list_update_and_delete(db, client):
    ctx = await tenant(db)
    r = await client.post(
        "/v1/agents",
        json={"id": "zeta", "name": "Zeta", "role": "reviewer", "max_tokens": 300,
              "metadata": {"team": "core"}},
        headers=ctx.headers,
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert (made["id"], made["model"], made["status"], made["version"]) == (
        "zeta", "offline/offline-1", "active", 1)
    assert made["metadata"] == {"team": "core", "max_tokens": 300}
    assert (made["total_tasks_completed"], made["total_tokens_used"], made["success_rate"]) == (
        0, 0, 100.0)
    assert (await client.get("/v1/agents/zeta", headers=ctx.headers)).json() == made
    await add_agents(client, ctx, agent("eta", status="maintenance"))

    listed = (await client.get("/v1/agents", headers=ctx.headers)).json()
    assert [a["id"] for a in listed] == ["eta", "zeta"]  # by slug
    r = await client.get("/v1/agents", params={"status": "maintenance"}, headers=ctx.headers)
    assert [a["id"] for a in r.json()] == ["eta"]
    r = await client.get("/v1/agents", params={"status": "asleep"}, headers=ctx.headers)
    assert r.status_code == 422

    r = await client.patch("/v1/agents/zeta", json={"name": "Zeta II"}, headers=ctx.headers)
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["role"], r.json()["version"]) == ("Zeta II", "reviewer", 2)
    r = await client.patch("/v1/agents/zeta", json={"max_tokens": 50}, headers=ctx.headers)
    assert r.json()["metadata"] == {"team": "core", "max_tokens": 50} and r.json()["version"] == 3
    same = await client.patch("/v1/agents/zeta", json={}, headers=ctx.headers)
    assert same.status_code == 200 and same.json()["version"] == 3, "nothing to change"
    for body in ({"id": "renamed"}, {"status": "asleep"}, {"max_tokens": 0}):
        r = await client.patch("/v1/agents/zeta", json=body, headers=ctx.headers)
        assert r.status_code == 422, (body, r.text)
    r = await client.patch("/v1/agents/zeta", json={"tools": ["rm_rf"]}, headers=ctx.headers)
    assert r.status_code == 422 and r.json()["detail"] == "unknown tool: rm_rf"
    r = await client.patch("/v1/agents/nobody", json={"name": "N"}, headers=ctx.headers)
    assert r.status_code == 404 and r.json()["detail"] == "agent nobody not found"
    assert (await client.get("/v1/agents/zeta", headers=ctx.headers)).json()["version"] == 3

    assert (await client.delete("/v1/agents/zeta", headers=ctx.headers)).status_code == 204
    assert (await client.get("/v1/agents/zeta", headers=ctx.headers)).status_code == 404
    assert (await client.delete("/v1/agents/zeta", headers=ctx.headers)).status_code == 404
    assert await count(db, "agents", ctx.tenant_id) == 1


async def test_an_agent_that_has_tasks_is_kept_and_can_be_set_inactive(db, client, ctx):
    definition = {"name": "uses-alpha", "tasks": {"a": {"agent": "alpha", "instruction": "x"}}}
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    r = await client.post("/v1/runs", json={"workflow": "uses-alpha"}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    r = await client.delete("/v1/agents/alpha", headers=ctx.headers)
    assert r.status_code == 409
    assert r.json()["detail"] == "agent alpha has run tasks; set its status to inactive instead"
    r = await client.patch("/v1/agents/alpha", json={"status": "inactive"}, headers=ctx.headers)
    assert r.status_code == 200 and r.json()["status"] == "inactive"
    assert await count(db, "agents", ctx.tenant_id) == 1


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


async def test_instances_keep_their_status_history_and_heartbeat_until_stopped(client, ctx):
    base = "/v1/agents/alpha/instances"
    r = await client.post(base, json={"instance_key": "pod-1", "capabilities": ["review"]},
                          headers=ctx.headers)
    assert r.status_code == 201, r.text
    started = r.json()
    iid = started["id"]
    assert (started["status"], started["capabilities"], started["stopped_at"]) == (
        "starting", ["review"], None)
    assert [(h["status"], h["reason"]) for h in started["history"]] == [("starting", None)]

    r = await client.post(f"{base}/{iid}/status", json={"status": "busy", "reason": "a task"},
                          headers=ctx.headers)
    assert r.status_code == 200, r.text
    r = await client.post(f"{base}/{iid}/status", json={"status": "busy"}, headers=ctx.headers)
    assert [(h["status"], h["reason"]) for h in r.json()["history"]] == [
        ("starting", None), ("busy", "a task")], "the same status again is no change"
    beat = await client.post(f"{base}/{iid}/heartbeat", headers=ctx.headers)
    assert beat.status_code == 200 and beat.json()["heartbeat_at"] >= r.json()["heartbeat_at"]
    r = await client.post(f"{base}/{iid}/status", json={"status": "asleep"}, headers=ctx.headers)
    assert r.status_code == 422

    r = await client.post(f"{base}/{iid}/status", json={"status": "stopped", "reason": "done"},
                          headers=ctx.headers)
    assert r.status_code == 200 and r.json()["stopped_at"] is not None
    assert [h["status"] for h in r.json()["history"]] == ["starting", "busy", "stopped"]
    r = await client.post(f"{base}/{iid}/status", json={"status": "idle"}, headers=ctx.headers)
    assert r.status_code == 409 and r.json()["detail"] == f"agent instance {iid} is stopped"
    r = await client.post(f"{base}/{iid}/heartbeat", headers=ctx.headers)
    assert r.status_code == 409 and r.json()["detail"] == f"agent instance {iid} has stopped"

    second = await client.post(base, json={"instance_key": "pod-2"}, headers=ctx.headers)
    listed = (await client.get(base, headers=ctx.headers)).json()
    assert [i["instance_key"] for i in listed] == ["pod-1", "pod-2"]
    assert listed[1]["id"] == second.json()["id"]
    missing = uuid.uuid4()
    for path in (f"{base}/{missing}/status", f"{base}/{missing}/heartbeat"):
        r = await client.post(path, json={"status": "idle"}, headers=ctx.headers)
        assert r.status_code == 404 and r.json()["detail"] == f"agent instance {missing} not found"
    r = await client.post("/v1/agents/nobody/instances", json={"instance_key": "x"},
                          headers=ctx.headers)
    assert r.status_code == 404
