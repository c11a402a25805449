"""The path of a run, end to end: a workflow saved over HTTP, a run created, its ready
tasks queued, a worker running each task's agent state machine with LLM calls through
the LLM layer (offline provider) and tool calls, dependants released, counters kept."""

from __future__ import annotations

from decimal import Decimal

from tests.runtime.helpers import add_agents, agent, count, settle, tenant, worker

DAG = """
name: review-chain
inputs:
  file: {required: true}
tasks:
  review:
    agent: rev
    instruction: "Review this code: {{ inputs.file }}"
  tests:
    agent: tester
    instruction: "Write tests given the review: {{ tasks.review.output }}"
  security:
    agent: rev
    instruction: "Security pass over {{ inputs.file }}"
    depends_on: [review]
  summary:
    agent: tester
    instruction: "Summarise"
    depends_on: [tests, security]
"""


async def test_workflow_run_executes_the_dag_with_tools_and_counters(db, settings, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("rev", tools=["text_stats"]), agent("tester"))
    r = await client.post("/v1/workflows", json={"source": DAG}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    assert r.json()["version"] == 1

    r = await client.post(
        "/v1/runs",
        json={"workflow": "review-chain", "inputs": {"file": "def add(a, b): return a + b"}},
        headers=ctx.headers,
    )
    assert r.status_code == 201, r.text
    run = r.json()
    assert run["status"] == "pending" and run["total_tasks"] == 4
    async with worker(db, settings):
        run = await settle(client, ctx, run["id"])
    assert run["status"] == "completed", run
    assert run["completed_tasks"] == 4 and run["failed_tasks"] == 0
    assert run["agents_used"] == 2 and run["tools_invoked"] == 2
    assert run["total_tokens"] > 0 and run["duration_ms"] is not None
    assert set(run["response"]) == {"review", "tests", "security", "summary"}
    assert run["result"] == run["response"]["summary"]

    tree = (await client.get(f"/v1/runs/{run['id']}/tree", headers=ctx.headers)).json()
    tasks = {t["node"]: t for t in tree["tasks"]}
    assert all(t["status"] == "completed" for t in tasks.values())
    # Dependencies: tests was implied by its template, summary declared.
    assert tasks["tests"]["depends_on"] == [tasks["review"]["id"]]
    assert sorted(tasks["summary"]["depends_on"]) == sorted(
        [tasks["tests"]["id"], tasks["security"]["id"]]
    )
    # Dependants started after their upstream finished.
    assert tasks["summary"]["started_at"] >= tasks["tests"]["completed_at"]
    review = tasks["review"]["agent_executions"][0]
    assert [t["to_state"] for t in review["transitions"]] == [
        "IDLE",
        "ANALYZING",
        "PLANNING",
        "RETRIEVING",
        "EXECUTING",
        "VALIDATING",
        "SYNTHESIZING",
        "COMPLETED",
    ]
    assert review["state"] == "COMPLETED"
    # The model asked for the tool, got its result, then answered: two LLM calls.
    assert [c["status"] for c in review["llm_calls"]] == ["completed", "completed"]
    assert review["tool_executions"][0]["tool_name"] == "text_stats"
    assert review["tool_executions"][0]["success"] is True
    assert review["tokens_used"] == sum(c["total_tokens"] for c in review["llm_calls"])
    # Totals agree across the run, its tasks and the usage ledger.
    assert run["total_tokens"] == sum(t["tokens_used"] for t in tree["tasks"])
    async with db.admin_connection() as conn:
        # Each execution keeps its conversation: the tool round included where there was one.
        cur = await conn.execute(
            "SELECT id::text, messages FROM agent_executions WHERE run_id = %s", [run["id"]]
        )
        conversations = {r["id"]: [m["role"] for m in r["messages"]] for r in await cur.fetchall()}
        assert conversations[review["id"]] == ["system", "user", "assistant", "tool"]
        tests_run = tasks["tests"]["agent_executions"][0]
        assert conversations[tests_run["id"]] == ["system", "user"]
        cur = await conn.execute(
            "SELECT coalesce(sum(total_tokens), 0) AS n FROM usage_records WHERE run_id = %s",
            [run["id"]],
        )
        assert (await cur.fetchone())["n"] == run["total_tokens"]
        cur = await conn.execute(
            "SELECT slug, total_tasks_completed, total_tokens_used, success_rate FROM agents "
            "WHERE tenant_id = %s ORDER BY slug",
            [ctx.tenant_id],
        )
        totals = {r["slug"]: r for r in await cur.fetchall()}
    assert totals["rev"]["total_tasks_completed"] == 2
    assert totals["tester"]["total_tasks_completed"] == 2
    assert (
        totals["rev"]["total_tokens_used"] + totals["tester"]["total_tokens_used"]
        == run["total_tokens"]
    )
    assert totals["rev"]["success_rate"] == 100.0
    # One event trail, in order, ending with the run's completion.
    r = await client.get(f"/v1/runs/{run['id']}/events", headers=ctx.headers)
    assert r.status_code == 200, r.text
    types = [e["type"] for e in r.json()["events"]]
    assert types[0] == "run.started" and types[-1] == "run.completed"
    assert types.count("task.completed") == 4 and "tool.called" in types
    # Moves written together are one event naming the states passed through; together
    # the review's events name every transition, in order, each once.
    moves = [
        e["payload"]
        for e in r.json()["events"]
        if e["type"] == "agent.state_changed" and e["task_id"] == tasks["review"]["id"]
    ]
    assert len(moves) < 7
    path = [moves[0]["states"][0]] + [s for m in moves for s in m["states"][1:]]
    assert path == [t["to_state"] for t in review["transitions"]]
    assert all(m["from"] == m["states"][0] and m["to"] == m["states"][-1] for m in moves)
    assert Decimal(run["total_cost_usd"]) == 0  # the offline model is free


async def test_query_run_modes(db, settings, client):
    ctx = await tenant(db)
    r = await client.post(
        "/v1/runs", json={"query": "What is 2+2?", "mode": "COMPLEX"}, headers=ctx.headers
    )
    assert r.status_code == 201, r.text
    assert r.json()["total_tasks"] == 4 and r.json()["kind"] == "query"
    async with worker(db, settings):
        run = await settle(client, ctx, r.json()["id"])
    assert run["status"] == "completed" and run["completed_tasks"] == 4
    assert "2+2" in run["result"]
    assert float(run["complexity_score"]) == 0.8
    assert await count(db, "agents", ctx.tenant_id) == 1  # the default assistant


async def test_an_upstream_output_appears_once_in_the_prompt(db, settings, client):
    """An output the instruction places itself is not appended again; the others are."""
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("a1"))
    spec = """
name: once
tasks:
  first: {agent: a1, instruction: "Say something"}
  second: {agent: a1, instruction: "Improve: {{ tasks.first.output }}"}
  third: {agent: a1, instruction: "Summarise", depends_on: [first]}
"""
    r = await client.post("/v1/workflows", json={"source": spec}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    async with worker(db, settings):
        r = await client.post("/v1/runs", json={"workflow": "once"}, headers=ctx.headers)
        run = await settle(client, ctx, r.json()["id"])
    assert run["status"] == "completed", run
    tree = (await client.get(f"/v1/runs/{run['id']}/tree", headers=ctx.headers)).json()
    tasks = {t["node"]: t for t in tree["tasks"]}
    first = tasks["first"]["output"]["text"]
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT t.node, c.request FROM llm_calls c JOIN tasks t ON t.id = c.task_id "
            "WHERE c.run_id = %s ORDER BY c.created_at", [run["id"]])
        prompts = {}
        for row in await cur.fetchall():
            prompts.setdefault(row["node"], row["request"]["messages"][1]["content"])
    assert prompts["second"].count(first) == 1 and "Results from the team" not in prompts["second"]
    assert prompts["third"].count(first) == 1 and "Results from the team" in prompts["third"]
