"""The API's reads a run page needs: runs by agent and time, a tree without its calls,
a run's LLM and tool calls a page at a time, one tool call; the events' tail; the
usage overview; LLM calls by API key. Another tenant's run is a 404 everywhere."""

from __future__ import annotations

import pytest

from tests.conftest import make_tenant
from tests.runtime.helpers import add_agents, agent, settle, tenant, worker

FLOW = {"name": "pair", "tasks": {
    "a": {"agent": "counter", "instruction": "Count the words of: one two three"},
    "b": {"agent": "counter", "instruction": "Then: {{ tasks.a.output }}"}}}


@pytest.fixture(scope="module")
async def ran(db, settings, app):
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as client:
        ctx = await tenant(db)
        await add_agents(client, ctx, agent("counter", tools=["text_stats"]))
        r = await client.post("/v1/workflows", json={"definition": FLOW}, headers=ctx.headers)
        assert r.status_code == 201, r.text
        async with worker(db, settings):
            r = await client.post("/v1/runs", json={"workflow": "pair"}, headers=ctx.headers)
            run = await settle(client, ctx, r.json()["id"])
        assert run["status"] == "completed", run
    return ctx, run


async def test_runs_by_agent_and_time(client, ran) -> None:
    ctx, run = ran
    created = run["created_at"]
    for params, found in (({"agent": "counter"}, True), ({"agent": "nobody"}, False),
                          ({"since": created}, True), ({"until": created}, False)):
        r = await client.get("/v1/runs", params=params, headers=ctx.headers)
        assert r.status_code == 200, r.text
        assert ([x["id"] for x in r.json()["items"]] == [run["id"]]) is found, params
    r = await client.get("/v1/runs", params={"since": "yesterday"}, headers=ctx.headers)
    assert r.status_code == 422


async def test_a_tree_without_calls_and_its_calls_in_pages(client, ran) -> None:
    ctx, run = ran
    full = (await client.get(f"/v1/runs/{run['id']}/tree", headers=ctx.headers)).json()
    light = (await client.get(f"/v1/runs/{run['id']}/tree?calls=false",
                              headers=ctx.headers)).json()
    executions = [e for t in full["tasks"] for e in t["agent_executions"]]
    llm = sorted(c["id"] for e in executions for c in e["llm_calls"])
    tools = sorted(c["id"] for e in executions for c in e["tool_executions"])
    assert llm and tools
    assert all(not e["llm_calls"] and not e["tool_executions"]
               for t in light["tasks"] for e in t["agent_executions"])
    assert [t["id"] for t in light["tasks"]] == [t["id"] for t in full["tasks"]]
    seen, cursor = [], None
    while True:
        r = await client.get(f"/v1/runs/{run['id']}/calls", headers=ctx.headers,
                             params={"limit": 2, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        seen += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(c["id"] for c in seen if c["kind"] == "llm") == llm
    assert sorted(c["id"] for c in seen if c["kind"] == "tool") == tools
    assert [c["created_at"] for c in seen] == sorted(c["created_at"] for c in seen)
    assert {c["task_node"] for c in seen} == {"a", "b"}
    tool = next(c for c in seen if c["kind"] == "tool")
    r = await client.get(f"/v1/runs/{run['id']}/tool-executions/{tool['id']}",
                         headers=ctx.headers)
    assert r.status_code == 200 and r.json()["tool_name"] == "text_stats"
    bad = await client.get(f"/v1/runs/{run['id']}/calls?cursor=bm9wZQ", headers=ctx.headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "cursor"


async def test_the_events_tail(client, ran) -> None:
    ctx, run = ran
    every = (await client.get(f"/v1/runs/{run['id']}/events?limit=1000",
                              headers=ctx.headers)).json()["events"]
    tail = (await client.get(f"/v1/runs/{run['id']}/events?tail=3",
                             headers=ctx.headers)).json()["events"]
    assert [e["seq"] for e in tail] == [e["seq"] for e in every[-3:]]
    assert tail[-1]["type"] == "run.completed"


async def test_the_usage_overview(client, ran) -> None:
    ctx, _ = ran
    r = await client.get("/v1/usage/overview?since=7d", headers=ctx.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["days"]) == 7
    assert body["totals"]["tasks_completed"] == 2 and body["totals"]["runs_completed"] == 1
    assert body["tasks_timed"] == 2 and body["task_duration_p50_ms"] is not None
    assert [a["label"] for a in body["top_agents"]] == ["counter"]
    assert [t["key"] for t in body["top_tools"]] == ["text_stats"]
    assert body["budget"]["tokens_used"] == body["totals"]["total_tokens"]
    assert (await client.get("/v1/usage/overview?top=0", headers=ctx.headers)).status_code == 422


async def test_llm_calls_by_api_key(client, ran) -> None:
    ctx, run = ran
    mine = (await client.get("/v1/llm-calls", params={"api_key_id": str(ctx.api_key_id)},
                             headers=ctx.headers)).json()
    assert mine and {c["run_id"] for c in mine} == {run["id"]}
    other_key = (await client.get("/v1/llm-calls", params={"api_key_id": str(run["id"])},
                                  headers=ctx.headers)).json()
    assert other_key == []


async def test_another_tenants_run_is_not_found(client, db, ran) -> None:
    _, run = ran
    stranger = await make_tenant(db)
    for path in (f"/v1/runs/{run['id']}/calls", f"/v1/runs/{run['id']}/tree?calls=false",
                 f"/v1/runs/{run['id']}/events?tail=5"):
        r = await client.get(path, headers=stranger.headers)
        assert r.status_code == 404, path
