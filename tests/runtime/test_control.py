"""Failures and control: provider errors retried then recorded, deadlines, cancel,
pause/resume, retry of a failed task, input requests, immutable run data."""

from __future__ import annotations

import asyncio

from tests.runtime.helpers import add_agents, agent, count, settle, tenant, worker

ONE = {
    "inputs": {},
    "tasks": {
        "only": {
            "agent": "{agent}",
            "instruction": "Do it",
            "retry": {"max_retries": 1, "delay_s": 0},
            "timeout_s": 5,
        },
        "after": {"agent": "{agent}", "instruction": "Then", "depends_on": ["only"]},
    },
}


def one(name: str, slug: str, timeout: float = 5) -> dict:
    tasks = {k: {**v, "agent": slug} for k, v in ONE["tasks"].items()}
    tasks["only"]["timeout_s"] = timeout
    return {"name": name, "tasks": tasks}


async def start(client, ctx, definition: dict) -> dict:
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    r = await client.post("/v1/runs", json={"workflow": definition["name"]}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def tree(client, ctx, run_id: str) -> dict:
    return (await client.get(f"/v1/runs/{run_id}/tree", headers=ctx.headers)).json()


async def test_provider_error_is_retried_then_fails_the_task_and_retry_recovers(
    db, settings, client
):
    ctx = await tenant(db)
    r = await client.post(
        "/v1/llm/providers",
        headers=ctx.headers,
        json={
            "name": "broken",
            "type": "openai_compatible",
            "base_url": "http://127.0.0.1:9",
            "api_key": "sk-test-0000000000000000",
            "config": {"max_retries": 1, "backoff": 0, "timeout": 2},
        },
    )
    assert r.status_code == 201, r.text
    await add_agents(client, ctx, agent("flaky", model="broken/gpt-4o"))
    run = await start(client, ctx, one("fragile", "flaky"))
    async with worker(db, settings):
        run = await settle(client, ctx, run["id"])
        assert run["status"] == "failed"
        assert run["failed_tasks"] == 1 and run["completed_tasks"] == 0
        assert "task only failed" in run["error"] and "broken" in run["error"]
        t = {x["node"]: x for x in (await tree(client, ctx, run["id"]))["tasks"]}
        assert t["only"]["status"] == "failed" and t["only"]["retry_count"] == 1
        assert "cannot reach provider broken" in t["only"]["error"]
        assert "sk-test" not in t["only"]["error"]
        assert t["after"]["status"] == "cancelled"
        executions = t["only"]["agent_executions"]
        assert [e["state"] for e in executions] == ["FAILED", "FAILED"]  # task retried once
        assert all(c["status"] == "failed" for e in executions for c in e["llm_calls"])
        # Fix the agent, retry the failed task: the run runs on and completes.
        r = await client.patch(
            "/v1/agents/flaky", json={"model": "offline/offline-1"}, headers=ctx.headers
        )
        assert r.status_code == 200
        r = await client.post(
            f"/v1/runs/{run['id']}/tasks/{t['only']['id']}/retry", headers=ctx.headers
        )
        assert r.status_code == 200, r.text
        run = await settle(client, ctx, run["id"])
    assert run["status"] == "completed", run
    assert run["completed_tasks"] == 2 and run["failed_tasks"] == 0
    r = await client.get("/v1/agents/flaky", headers=ctx.headers)
    assert r.json()["total_tasks_failed"] == 2 and r.json()["total_tasks_completed"] == 2
    assert r.json()["success_rate"] == 50.0


async def test_task_past_its_deadline_fails_with_a_timeout(db, settings, client):
    ctx = await tenant(db)
    r = await client.post(
        "/v1/llm/providers",
        headers=ctx.headers,
        json={"name": "slow", "type": "offline", "config": {"latency_ms": 5000}},
    )
    assert r.status_code == 201, r.text
    await add_agents(client, ctx, agent("sloth", model="slow/offline-1"))
    definition = one("slow-one", "sloth", timeout=0.3)
    definition["tasks"]["only"]["retry"] = {"max_retries": 0}
    run = await start(client, ctx, definition)
    async with worker(db, settings):
        run = await settle(client, ctx, run["id"], timeout=10)
    assert run["status"] == "failed"
    t = {x["node"]: x for x in (await tree(client, ctx, run["id"]))["tasks"]}
    assert t["only"]["error"] == "timeout: the task exceeded its deadline of 0.3s"
    assert t["only"]["deadline_at"] is not None


async def test_cancel_pause_resume(db, settings, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("worker-bee"))
    doomed = await start(client, ctx, one("doomed", "worker-bee"))
    r = await client.post(f"/v1/runs/{doomed['id']}/cancel", headers=ctx.headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await client.post(f"/v1/runs/{doomed['id']}/cancel", headers=ctx.headers)
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]

    r = await client.post("/v1/runs", json={"workflow": "doomed"}, headers=ctx.headers)
    held = r.json()
    r = await client.post(f"/v1/runs/{held['id']}/pause", headers=ctx.headers)
    assert r.status_code == 200 and r.json()["status"] == "paused"
    async with worker(db, settings):
        await asyncio.sleep(0.5)  # the worker claims the job and leaves the task queued
        t = await tree(client, ctx, held["id"])
        assert t["run"]["status"] == "paused"
        assert {x["status"] for x in t["tasks"]} == {"queued", "pending"}
        r = await client.post(f"/v1/runs/{held['id']}/resume", headers=ctx.headers)
        assert r.status_code == 200, r.text
        run = await settle(client, ctx, held["id"])
    assert run["status"] == "completed"
    t = await tree(client, ctx, doomed["id"])
    assert {x["status"] for x in t["tasks"]} == {"cancelled"}
    assert all(not x["agent_executions"] for x in t["tasks"])
    r = await client.post(f"/v1/runs/{run['id']}/cancel", headers=ctx.headers)
    assert r.status_code == 409


async def test_input_request_answer_is_validated_and_resumes_the_task(db, settings, client):
    ctx = await tenant(db)
    schema = {
        "type": "object",
        "required": ["approved"],
        "properties": {"approved": {"type": "boolean"}},
    }
    await add_agents(
        client, ctx, agent("asker", tools=["ask_human"], metadata={"input_schema": schema})
    )
    definition = one("ask", "asker")
    del definition["tasks"]["after"]
    run = await start(client, ctx, definition)
    async with worker(db, settings):
        run = await settle(client, ctx, run["id"], statuses={"paused", "failed"})
        assert run["pending_input_requests"] == 1
        reqs = (
            await client.get(f"/v1/input-requests?run_id={run['id']}", headers=ctx.headers)
        ).json()
        assert len(reqs) == 1 and reqs[0]["schema"] == schema
        rid = reqs[0]["id"]
        r = await client.post(
            f"/v1/input-requests/{rid}/answer",
            json={"response": {"approved": "yes"}},
            headers=ctx.headers,
        )
        assert r.status_code == 422
        assert "approved" in r.json()["detail"] and "boolean" in r.json()["detail"]
        t = {x["node"]: x for x in (await tree(client, ctx, run["id"]))["tasks"]}
        assert t["only"]["status"] == "waiting"
        assert (await tree(client, ctx, run["id"]))["input_requests"][0]["status"] == "pending"
        r = await client.post(
            f"/v1/input-requests/{rid}/answer",
            json={"response": {"approved": True}},
            headers=ctx.headers,
        )
        assert r.status_code == 200 and r.json()["status"] == "answered"
        run = await settle(client, ctx, run["id"])
        r = await client.post(
            f"/v1/input-requests/{rid}/answer",
            json={"response": {"approved": True}},
            headers=ctx.headers,
        )
        assert r.status_code == 409
    assert run["status"] == "completed", run
    t = {x["node"]: x for x in (await tree(client, ctx, run["id"]))["tasks"]}
    assert '"approved": true' in t["only"]["output"]["text"]
    execution = t["only"]["agent_executions"]
    assert len(execution) == 1 and execution[0]["state"] == "COMPLETED"  # one execution, resumed
    assert execution[0]["tool_executions"][0]["tool_name"] == "ask_human"
    assert run["tools_invoked"] == 1


async def test_run_data_is_immutable(db, client):
    ctx = await tenant(db)
    run = (await client.post("/v1/runs", json={"query": "facts"}, headers=ctx.headers)).json()
    body = {"key": "findings/1", "value": {"severity": "high"}, "tags": ["security"]}
    r = await client.post(f"/v1/runs/{run['id']}/data", json=body, headers=ctx.headers)
    assert r.status_code == 201, r.text
    r = await client.post(
        f"/v1/runs/{run['id']}/data", json={**body, "value": 2}, headers=ctx.headers
    )
    assert r.status_code == 409 and "key" in r.json()["detail"]
    data = (await client.get(f"/v1/runs/{run['id']}/data", headers=ctx.headers)).json()
    assert [d["value"] for d in data] == [{"severity": "high"}]
    assert await count(db, "run_data", ctx.tenant_id) == 1
