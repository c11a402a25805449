"""The workflow format as a newcomer meets it: the README's example saved and run, the
published schema, and every problem of a bad document reported at once, in its terms."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import yaml

from agentplane.workflows.spec import json_schema
from tests.runtime.helpers import add_agents, agent, count, settle, tenant, worker

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    found = re.search(r"### Writing a workflow\n.*?```yaml\n(.*?)```", text, re.DOTALL)
    assert found, "the README has no ```yaml example under 'Writing a workflow'"
    return found.group(1)


async def test_the_readme_example_saves_and_runs_to_completion(db, settings, client):
    source = readme_example()
    data = yaml.safe_load(source)
    jsonschema.validate(data, json_schema())  # the example obeys the published schema
    ctx = await tenant(db)
    slugs = sorted({t["agent"] for t in data["tasks"].values()})
    await add_agents(client, ctx, *(agent(s) for s in slugs))

    r = await client.post("/v1/workflows", json={"source": source}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    saved = r.json()
    assert saved["name"] == data["name"] and saved["source"] == source
    r = await client.post(
        "/v1/runs",
        json={"workflow": data["name"], "inputs": {"change": "def add(a, b): return a - b"}},
        headers=ctx.headers,
    )
    assert r.status_code == 201, r.text
    async with worker(db, settings):
        run = await settle(client, ctx, r.json()["id"], timeout=60)
    assert run["status"] == "completed", run
    assert run["completed_tasks"] == run["total_tasks"] == len(data["tasks"])
    assert run["inputs"]["audience"] == "the team"  # the declared default

    tree = (await client.get(f"/v1/runs/{run['id']}/tree", headers=ctx.headers)).json()
    tasks = {t["node"]: t for t in tree["tasks"]}
    ids = {name: t["id"] for name, t in tasks.items()}
    assert tasks["review"]["depends_on"] == [] and tasks["security"]["depends_on"] == []
    assert tasks["tests"]["depends_on"] == [ids["review"]]  # implied by the template
    assert sorted(tasks["decision"]["depends_on"]) == sorted(
        ids[n] for n in ("review", "security", "tests")
    )
    assert tasks["decision"]["started_at"] >= max(
        tasks[n]["completed_at"] for n in ("review", "security", "tests")
    )
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT node, max_retries, timeout_s FROM tasks WHERE run_id = %s", [run["id"]]
        )
        rows = {r["node"]: (r["max_retries"], float(r["timeout_s"])) for r in await cur.fetchall()}
    assert rows == {
        name: (t.get("retry", {}).get("max_retries", 0), float(t.get("timeout_s", 300)))
        for name, t in data["tasks"].items()
    }


async def test_the_openapi_shows_the_definition_schema(client):
    spec = (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    definition = schemas["WorkflowIn"]["properties"]["definition"]
    shown = next(s for s in definition["anyOf"] if s.get("type") == "object")
    assert set(shown["properties"]) == {"name", "description", "inputs", "tasks"}
    task = schemas["TaskSpec"]["properties"]
    assert {"agent", "instruction", "depends_on", "retry", "timeout_s"} <= set(task)
    assert "{{ inputs.NAME }}" in task["instruction"]["description"]
    assert set(schemas["RetrySpec"]["properties"]) == {"max_retries", "delay_s"}


async def test_a_single_brace_template_is_422_naming_task_and_field(db, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("alpha"))
    definition = {
        "name": "brief",
        "inputs": {"topic": {}},
        "tasks": {"write": {"agent": "alpha", "instruction": "Write about {topic}"}},
    }
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=ctx.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    [problem] = r.json()["errors"]
    assert problem["field"] == "tasks.write.instruction" and problem["value"] == "{topic}"
    assert "{{ inputs.topic }}" in problem["message"]
    assert "tasks.write.instruction" in r.json()["detail"]
    assert await count(db, "workflows", ctx.tenant_id) == 0


async def test_every_problem_of_a_document_is_reported_at_once(db, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("alpha"))
    source = """
name: messy
inputs:
  code: {}
tasks:
  review:
    agent: alpha
    instruction: "Check {{ secrets.key }}, then {{ inputs.nope }} and {{ inputs.code }}"
    prompt: leftover
  tests:
    agent: ghost
    instruction: "Test {{ tasks.review.output }}"
    retry: {max_retries: -1}
"""
    r = await client.post("/v1/workflows", json={"source": source}, headers=ctx.headers)
    assert r.status_code == 422, r.text
    got = {(p["field"], str(p["value"])) for p in r.json()["errors"]}
    assert got == {
        ("tasks.review.instruction", "{{ secrets.key }}"),
        ("tasks.review.instruction", "{{ inputs.nope }}"),
        ("tasks.review.prompt", "leftover"),
        ("tasks.tests.agent", "ghost"),
        ("tasks.tests.retry.max_retries", "-1"),
    }
    messages = " | ".join(p["message"] for p in r.json()["errors"])
    assert "did you mean instruction?" in messages and "unknown agent 'ghost'" in messages
    assert await count(db, "workflows", ctx.tenant_id) == 0


async def test_bad_yaml_names_line_and_column(db, client):
    ctx = await tenant(db)
    source = "name: broken\ntasks:\n  a:\n    agent: alpha\n    instruction: hi: there\n"
    r = await client.post("/v1/workflows", json={"source": source}, headers=ctx.headers)
    assert r.status_code == 422, r.text
    [problem] = r.json()["errors"]
    assert (problem["field"], problem["line"], problem["column"]) == ("source", 5, 20)
    assert "line 5, column 20" in r.json()["detail"]
    r = await client.post(
        "/v1/workflows", json={"source": '{"name": "j",\n "tasks": {,}}'}, headers=ctx.headers
    )
    assert r.status_code == 422
    assert (r.json()["errors"][0]["line"], r.json()["errors"][0]["column"]) == (2, 12)
    assert await count(db, "workflows", ctx.tenant_id) == 0


async def test_a_query_run_with_an_unknown_agent_names_the_agent(db, client):
    ctx = await tenant(db)
    r = await client.post("/v1/runs", json={"query": "hi", "agent": "ghost"}, headers=ctx.headers)
    assert r.status_code == 422, r.text
    assert r.headers["content-type"] == "application/problem+json"
    [problem] = r.json()["errors"]
    assert (problem["field"], problem["value"]) == ("agent", "ghost")
    assert "answer" not in r.json()["detail"]  # not the internal task's name
    for table in ("runs", "tasks", "jobs", "agents"):
        assert await count(db, table, ctx.tenant_id) == 0


async def test_a_bad_workflow_name_in_the_body_is_named_with_its_value(db, client):
    ctx = await tenant(db)
    body = {"name": "Bad Name", "definition": {"tasks": {"a": {"agent": "x", "instruction": "y"}}}}
    r = await client.post("/v1/workflows", json=body, headers=ctx.headers)
    assert r.status_code == 422, r.text
    [problem] = r.json()["errors"]
    assert (problem["field"], problem["value"]) == ("name", "Bad Name")
    r = await client.post("/v1/workflows", json={"definition": [1, 2]}, headers=ctx.headers)
    assert r.status_code == 422
    assert r.json()["errors"][0]["field"] == "definition"
    assert await count(db, "workflows", ctx.tenant_id) == 0
