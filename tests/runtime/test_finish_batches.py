"""Completed tasks of a tenant finish in batches (group commit, db/batcher.py and
runtime_complete in runtime/sql/batches.sql): a fan-out run whose leaves finish together
keeps every count, trace and budget exact; a task taken over while it ran gets its LLM
call and a FAILED trace only; an item that breaks its batch fails alone while the
others commit."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.runtime.executor import Execution, Executor
from tests.runtime.helpers import add_agents, agent, settle, tenant, worker

LEAVES = 20


async def rows(db: Database, sql: str, *params: Any) -> list[dict[str, Any]]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(sql, list(params))
        return await cur.fetchall()


async def one(db: Database, sql: str, *params: Any) -> dict[str, Any]:
    (row,) = await rows(db, sql, *params)
    return row


async def start(client, ctx, definition: dict) -> dict[str, Any]:
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    r = await client.post("/v1/runs", json={"workflow": definition["name"]}, headers=ctx.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def tasks_of(db: Database, run_id: Any) -> dict[str, dict[str, Any]]:
    found = await rows(
        db, "SELECT id, node, status, dispatch FROM tasks WHERE run_id = %s", UUID(str(run_id))
    )
    return {t["node"]: t for t in found}


async def transitions(db: Database, execution_id: UUID) -> list[dict[str, Any]]:
    return await rows(
        db,
        "SELECT seq, to_state FROM agent_execution_transitions "
        "WHERE agent_execution_id = %s ORDER BY seq",
        execution_id,
    )


async def events(db: Database, run_id: Any) -> list[dict[str, Any]]:
    return await rows(
        db,
        "SELECT seq, type, task_id FROM events WHERE run_id = %s ORDER BY seq",
        UUID(str(run_id)),
    )


async def calls_per_task(db: Database, table: str, run_id: Any) -> dict[UUID, int]:
    found = await rows(
        db,
        f"SELECT task_id, count(*) AS n FROM {table} WHERE run_id = %s GROUP BY task_id",
        UUID(str(run_id)),
    )
    return {r["task_id"]: r["n"] for r in found}


async def assert_budget_settled(db: Database, tenant_id: UUID) -> None:
    """No reservation left, and the tenant's month counts exactly what its calls used."""
    held = await one(
        db, "SELECT count(*) AS n FROM budget_reservations WHERE tenant_id = %s", tenant_id
    )
    assert held["n"] == 0
    used = await one(
        db,
        "SELECT coalesce(sum(total_tokens), 0) AS n, count(*) AS calls FROM llm_calls "
        "WHERE tenant_id = %s",
        tenant_id,
    )
    assert used["calls"] > 0 and used["n"] > 0
    t = await one(
        db, "SELECT tokens_reserved, monthly_token_usage FROM tenants WHERE id = %s", tenant_id
    )
    assert t["tokens_reserved"] == 0
    assert t["monthly_token_usage"] == used["n"]


async def test_a_fan_out_finishes_in_batches_with_every_count_exact(db, settings, client):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("fan"))
    leaves = [f"leaf{i:02d}" for i in range(LEAVES)]
    definition = {
        "name": "fan-out",
        "tasks": {
            "root": {"agent": "fan", "instruction": "Split the work"},
            **{
                leaf: {"agent": "fan", "instruction": f"Do part {leaf}", "depends_on": ["root"]}
                for leaf in leaves
            },
            "join": {"agent": "fan", "instruction": "Join the parts", "depends_on": leaves},
        },
    }
    run = await start(client, ctx, definition)
    total = LEAVES + 2
    assert run["total_tasks"] == total
    async with worker(db, settings, concurrency=16):
        run = await settle(client, ctx, run["id"], timeout=90)
    assert run["status"] == "completed", run
    assert run["completed_tasks"] == total and run["failed_tasks"] == 0

    tasks = await tasks_of(db, run["id"])
    assert len(tasks) == total
    assert {t["status"] for t in tasks.values()} == {"completed"}
    ids = {t["id"] for t in tasks.values()}

    # One agent execution per task, COMPLETED, its transitions numbered without gaps.
    executions = await rows(
        db, "SELECT id, task_id, state FROM agent_executions WHERE run_id = %s", UUID(run["id"])
    )
    assert sorted(e["task_id"] for e in executions) == sorted(ids)
    for e in executions:
        assert e["state"] == "COMPLETED"
        steps = await transitions(db, e["id"])
        assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
        assert steps[0]["to_state"] == "IDLE" and steps[-1]["to_state"] == "COMPLETED"

    # The run's events: numbered 1..N, one task.completed per task, one run.completed last.
    trail = await events(db, run["id"])
    assert [e["seq"] for e in trail] == list(range(1, len(trail) + 1))
    done = [e["task_id"] for e in trail if e["type"] == "task.completed"]
    assert sorted(done) == sorted(ids)
    assert [e["type"] for e in trail].count("run.completed") == 1
    assert trail[-1]["type"] == "run.completed"

    # One LLM call and one usage record per task; budgets settled to what they used.
    assert await calls_per_task(db, "llm_calls", run["id"]) == dict.fromkeys(ids, 1)
    assert await calls_per_task(db, "usage_records", run["id"]) == dict.fromkeys(ids, 1)
    await assert_budget_settled(db, ctx.tenant_id)
    tokens = await one(
        db, "SELECT sum(total_tokens) AS n FROM llm_calls WHERE run_id = %s", UUID(run["id"])
    )
    assert run["total_tokens"] == tokens["n"]

    # The agent's totals count every task of the run.
    r = await client.get("/v1/agents/fan", headers=ctx.headers)
    assert r.status_code == 200, r.text
    assert r.json()["total_tasks_completed"] == total
    totals = await one(
        db,
        "SELECT total_tasks_completed, total_tokens_used FROM agents "
        "WHERE tenant_id = %s AND slug = 'fan'",
        ctx.tenant_id,
    )
    assert totals["total_tasks_completed"] == total
    assert totals["total_tokens_used"] == tokens["n"]

    # Batching happened: leaves' calls were recorded by fewer transactions (the inserting
    # transaction's id, xmin) than leaves.
    stamps = await one(
        db,
        "SELECT count(DISTINCT xmin::text) AS n FROM llm_calls WHERE task_id = ANY(%s)",
        [tasks[leaf]["id"] for leaf in leaves],
    )
    assert 1 <= stamps["n"] < LEAVES
    # Yet each call completed when it returned: its start plus its latency.
    late = await one(
        db,
        "SELECT count(*) AS n FROM llm_calls WHERE run_id = %s AND abs(extract(epoch FROM "
        "completed_at - created_at) * 1000 - latency_ms) > 1",
        UUID(run["id"]),
    )
    assert late == {"n": 0}
    # One job per task (those of released tasks made by the database), each with a
    # time-ordered (version 7) id and its task's dispatch.
    jobs = await rows(
        db,
        "SELECT id::text, payload FROM jobs WHERE payload->>'run_id' = %s",
        run["id"],
    )
    assert sorted(j["payload"]["task_id"] for j in jobs) == sorted(str(i) for i in ids)
    assert {j["id"][14] for j in jobs} == {"7"}
    assert {j["payload"]["dispatch"] for j in jobs} == {1}


class Gated(Executor):
    """The executor, with each task held before it finishes until `expect` tasks are
    there (so that they finish in one batch), and the size of every batch written."""

    def __init__(self, db: Database, settings: Settings, expect: int) -> None:
        super().__init__(db, settings)
        self.expect = expect
        self.arrived: list[Execution] = []
        self.all_in = asyncio.Event()
        self.go = asyncio.Event()
        self.sizes: list[int] = []

    async def _complete(self, execution: Execution, output: dict[str, Any]) -> str:
        self.arrived.append(execution)
        if len(self.arrived) == self.expect:
            self.all_in.set()
        await self.go.wait()
        return await super()._complete(execution, output)

    async def _complete_many(self, tenant_id: UUID, finished: list) -> list[str]:
        self.sizes.append(len(finished))
        return await super()._complete_many(tenant_id, finished)


def parallel(name: str, slug: str, nodes: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "tasks": {n: {"agent": slug, "instruction": f"Do {n}"} for n in nodes},
    }


async def run_held(
    db: Database, settings: Settings, ctx, run: dict, nodes: list[str], kind: type = Gated
) -> tuple[Gated, asyncio.Future, dict[str, dict[str, Any]]]:
    """The run's tasks started on a Gated executor, all held before they finish."""
    tasks = await tasks_of(db, run["id"])
    assert {tasks[n]["status"] for n in nodes} == {"queued"}
    executor = kind(db, settings, expect=len(nodes))
    running = asyncio.gather(
        *(
            executor.run_task(ctx.tenant_id, UUID(run["id"]), tasks[n]["id"], tasks[n]["dispatch"])
            for n in nodes
        ),
        return_exceptions=True,
    )
    arrived = asyncio.ensure_future(executor.all_in.wait())
    await asyncio.wait([arrived, running], timeout=30, return_when=asyncio.FIRST_COMPLETED)
    if not arrived.done():
        arrived.cancel()
        detail = running.result() if running.done() else "still running"
        pytest.fail(f"the tasks did not all reach their finish: {detail}")
    # Each task's last call keeps its budget reserved until the finish settles it.
    held = await one(
        db, "SELECT count(*) AS n FROM budget_reservations WHERE tenant_id = %s", ctx.tenant_id
    )
    assert held["n"] == len(nodes)
    return executor, running, tasks


async def execution(db: Database, task_id: UUID) -> dict[str, Any]:
    return await one(
        db, "SELECT id, state, error_message FROM agent_executions WHERE task_id = %s", task_id
    )


async def test_a_task_taken_over_in_a_batch_gets_its_call_and_a_failed_trace_only(
    db, settings, client
):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("pair"))
    run = await start(client, ctx, parallel("two", "pair", ["first", "second"]))
    executor, running, tasks = await run_held(db, settings, ctx, run, ["first", "second"])
    second = tasks["second"]
    # Taken over while it ran: queued again under the next dispatch.
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE tasks SET status = 'queued', dispatch = dispatch + 1 WHERE id = %s",
            [second["id"]],
        )
    executor.go.set()
    outcomes = await asyncio.wait_for(running, 30)
    assert outcomes == ["completed", "skipped"]
    assert executor.sizes == [2]  # both in one batch

    after = await tasks_of(db, run["id"])
    assert after["first"]["status"] == "completed"
    # The batch left the second task to whoever runs it now.
    assert after["second"]["status"] == "queued"
    assert after["second"]["dispatch"] == second["dispatch"] + 1

    first = await execution(db, tasks["first"]["id"])
    assert first["state"] == "COMPLETED" and first["error_message"] is None
    failed = await execution(db, second["id"])
    assert failed["state"] == "FAILED" and "cancelled" in failed["error_message"]
    for e in (first, failed):
        steps = await transitions(db, e["id"])
        assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
        assert steps[-1]["to_state"] == e["state"]
    assert "COMPLETED" not in [s["to_state"] for s in await transitions(db, failed["id"])]

    # Its call happened: recorded once, with its usage, and its reservation settled.
    ids = {tasks["first"]["id"], second["id"]}
    assert await calls_per_task(db, "llm_calls", run["id"]) == dict.fromkeys(ids, 1)
    assert await calls_per_task(db, "usage_records", run["id"]) == dict.fromkeys(ids, 1)
    await assert_budget_settled(db, ctx.tenant_id)

    # Only the first counts as completed: in the trail, the run and the agent's totals.
    trail = await events(db, run["id"])
    assert [e["seq"] for e in trail] == list(range(1, len(trail) + 1))
    done = [e["task_id"] for e in trail if e["type"] == "task.completed"]
    assert done == [tasks["first"]["id"]]
    counts = await one(
        db, "SELECT status, completed_tasks FROM runs WHERE id = %s", UUID(run["id"])
    )
    assert counts["status"] == "running" and counts["completed_tasks"] == 1
    totals = await one(
        db,
        "SELECT a.total_tasks_completed + coalesce((SELECT sum(d.completed) "
        "FROM agent_total_deltas d WHERE d.agent_id = a.id), 0) AS n "
        "FROM agents a WHERE a.tenant_id = %s AND a.slug = 'pair'",
        ctx.tenant_id,
    )
    assert totals["n"] == 1


class Broken(Gated):
    """Gated, and the output of node `bad` cannot be stored (PostgreSQL text holds no NUL),
    so that its completion breaks any batch it is in."""

    async def _complete(self, execution: Execution, output: dict[str, Any]) -> str:
        if execution.task["node"] == "bad":
            output = {**output, "text": output["text"] + "\x00"}
        return await super()._complete(execution, output)


async def test_an_item_that_breaks_its_batch_fails_alone_and_the_others_commit(
    db, settings, client
):
    ctx = await tenant(db)
    await add_agents(client, ctx, agent("trio"))
    nodes = ["good1", "bad", "good2"]
    run = await start(client, ctx, parallel("three", "trio", nodes))
    executor, running, tasks = await run_held(db, settings, ctx, run, nodes, Broken)
    executor.go.set()
    outcomes = dict(zip(nodes, await asyncio.wait_for(running, 30), strict=True))
    # The batch of three failed; each was then written alone.
    assert executor.sizes == [3, 1, 1, 1]
    assert outcomes == {"good1": "completed", "bad": "failed", "good2": "completed"}

    # The task whose completion cannot be written fails (the run does not hang on it).
    after = await tasks_of(db, run["id"])
    assert after["good1"]["status"] == after["good2"]["status"] == "completed"
    assert after["bad"]["status"] == "failed"
    for n in ("good1", "good2"):
        e = await execution(db, tasks[n]["id"])
        assert e["state"] == "COMPLETED"
        steps = await transitions(db, e["id"])
        assert [s["seq"] for s in steps] == list(range(1, len(steps) + 1))
    bad = await execution(db, tasks["bad"]["id"])
    assert bad["state"] == "FAILED" and "completion was not written" in bad["error_message"]

    # The bad task's call is still recorded, once (the batches that held it rolled back),
    # and its reservation settled.
    ids = {t["id"] for t in tasks.values()}
    assert await calls_per_task(db, "llm_calls", run["id"]) == dict.fromkeys(ids, 1)
    assert await calls_per_task(db, "usage_records", run["id"]) == dict.fromkeys(ids, 1)
    await assert_budget_settled(db, ctx.tenant_id)

    trail = await events(db, run["id"])
    assert [e["seq"] for e in trail] == list(range(1, len(trail) + 1))
    done = sorted(e["task_id"] for e in trail if e["type"] == "task.completed")
    assert done == sorted([tasks["good1"]["id"], tasks["good2"]["id"]])
    assert [e["task_id"] for e in trail if e["type"] == "task.failed"] == [tasks["bad"]["id"]]
    # good2 is written while bad fails the run: either may commit first.
    types = [e["type"] for e in trail]
    assert types.count("run.failed") == 1
    assert types.index("run.failed") > types.index("task.failed")
    counts = await one(
        db, "SELECT status, completed_tasks, failed_tasks FROM runs WHERE id = %s", UUID(run["id"])
    )
    assert counts == {"status": "failed", "completed_tasks": 2, "failed_tasks": 1}
