"""Bad input to workflows and runs: a clear 4xx problem naming what is wrong, and nothing
written."""

from __future__ import annotations

import uuid

import pytest

from tests.runtime.helpers import add_agents, agent, count, tenant

GOOD = {
    "name": "wf",
    "inputs": {"code": {}},
    "tasks": {
        "a": {"agent": "alpha", "instruction": "Look at {{ inputs.code }}"},
        "b": {"agent": "alpha", "instruction": "Then {{ tasks.a.output }}"},
    },
}


@pytest.fixture
async def ctx(db, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("alpha"))
    return ctx


def with_tasks(**tasks):
    return {**GOOD, "tasks": tasks}


@pytest.mark.parametrize(
    ("definition", "expected"),
    [
        (
            with_tasks(
                a={"agent": "alpha", "instruction": "x", "depends_on": ["c"]},
                b={"agent": "alpha", "instruction": "y", "depends_on": ["a"]},
                c={"agent": "alpha", "instruction": "z", "depends_on": ["b"]},
            ),
            "the workflow has a cycle: a -> b -> c -> a",
        ),
        (
            with_tasks(a={"agent": "ghost-9", "instruction": "x"}),
            "tasks.a.agent: unknown agent 'ghost-9'",
        ),
        (
            with_tasks(a={"agent": "alpha", "instruction": "use {{ inputs.nope }}"}),
            "tasks.a.instruction: missing input 'nope'",
        ),
        (
            with_tasks(a={"agent": "alpha", "instruction": "use {{ inputs.code"}),
            "tasks.a.instruction: unclosed {{",
        ),
        (
            with_tasks(a={"agent": "alpha", "instruction": "use {{ secrets.key }}"}),
            "tasks.a.instruction: {{ secrets.key }} is not one of",
        ),
        (
            with_tasks(a={"agent": "alpha", "instruction": "{{ tasks.zz.output }}"}),
            "tasks.a.instruction: depends on unknown task 'zz'",
        ),
        (
            with_tasks(a={"agent": "alpha", "instruction": "x", "depends_on": ["a"]}),
            "tasks.a.depends_on: a task cannot depend on itself",
        ),
        ({"name": "wf", "tasks": {}}, "tasks"),
    ],
)
async def test_invalid_workflow_is_422_naming_the_problem(db, client, ctx, definition, expected):
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=ctx.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert expected in r.json()["detail"]
    assert await count(db, "workflows", ctx.tenant_id) == 0
    assert await count(db, "workflow_versions", ctx.tenant_id) == 0


async def test_unparseable_yaml_is_422(db, client, ctx):
    r = await client.post("/v1/workflows", json={"source": "tasks: [unclosed"}, headers=ctx.headers)
    assert r.status_code == 422
    assert "not valid YAML" in r.json()["detail"]
    assert await count(db, "workflows", ctx.tenant_id) == 0


async def test_editing_makes_a_version_and_runs_keep_theirs(db, client, ctx):
    r = await client.post("/v1/workflows", json={"definition": GOOD}, headers=ctx.headers)
    assert r.status_code == 201 and r.json()["version"] == 1
    run = (
        await client.post(
            "/v1/runs", json={"workflow": "wf", "inputs": {"code": "x"}}, headers=ctx.headers
        )
    ).json()
    edited = {**GOOD, "tasks": {"a": GOOD["tasks"]["a"]}}
    r = await client.post("/v1/workflows", json={"definition": edited}, headers=ctx.headers)
    assert r.json()["version"] == 2 and r.json()["latest_version"] == 2
    again = (await client.get(f"/v1/runs/{run['id']}", headers=ctx.headers)).json()
    assert again["workflow_version"] == 1 and again["total_tasks"] == 2
    versions = (await client.get("/v1/workflows/wf/versions", headers=ctx.headers)).json()
    assert [v["version"] for v in versions] == [1, 2]
    old = (await client.get("/v1/workflows/wf?version=1", headers=ctx.headers)).json()
    assert set(old["definition"]["tasks"]) == {"a", "b"}


async def test_missing_and_unknown_inputs_are_422_and_nothing_runs(db, client, ctx):
    await client.post("/v1/workflows", json={"definition": GOOD}, headers=ctx.headers)
    r = await client.post(
        "/v1/runs", json={"workflow": "wf", "inputs": {"other": 1}}, headers=ctx.headers
    )
    assert r.status_code == 422
    assert r.json()["detail"] == "missing input: code; unknown input: other"
    assert r.json()["missing"] == ["code"]
    for table in ("runs", "tasks", "jobs"):
        assert await count(db, table, ctx.tenant_id) == 0


async def test_unknown_ids_are_404(client, ctx):
    missing = uuid.uuid4()
    for method, path, body in [
        ("GET", f"/v1/runs/{missing}", None),
        ("GET", f"/v1/runs/{missing}/tree", None),
        ("POST", f"/v1/runs/{missing}/cancel", None),
        ("GET", "/v1/agents/nobody", None),
        ("GET", "/v1/workflows/nothing", None),
        ("POST", "/v1/runs", {"workflow": "nothing"}),
        ("POST", f"/v1/input-requests/{missing}/answer", {"response": 1}),
    ]:
        r = await client.request(method, path, json=body, headers=ctx.headers)
        assert r.status_code == 404, (path, r.text)
        assert r.headers["content-type"] == "application/problem+json"


async def test_scopes_are_enforced(db, client):
    viewer = await tenant(db, role="viewer")
    r = await client.post("/v1/agents", json=agent("x"), headers=viewer.headers)
    assert r.status_code == 403
    r = await client.post("/v1/runs", json={"query": "hi"}, headers=viewer.headers)
    assert r.status_code == 403
    assert (await client.get("/v1/runs", headers=viewer.headers)).status_code == 200
    assert await count(db, "runs", viewer.tenant_id) == 0


async def test_another_tenants_run_is_404(db, client, ctx):
    other = await tenant(db)
    run = (await client.post("/v1/runs", json={"query": "mine"}, headers=other.headers)).json()
    r = await client.get(f"/v1/runs/{run['id']}", headers=ctx.headers)
    assert r.status_code == 404
    r = await client.post(f"/v1/runs/{run['id']}/cancel", headers=ctx.headers)
    assert r.status_code == 404
