"""Runs: creating one writes its tasks and dependencies and enqueues the ready ones in
one transaction; reading a run, a page of runs, its tree, its calls and tool calls."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

from agentplane import ids, pagination
from agentplane.agents import store as agents_store
from agentplane.auth.models import Principal
from agentplane.db.pool import Connection, Database
from agentplane.errors import Conflict, NotFound
from agentplane.llm import service as llm
from agentplane.money import known_cost, plain
from agentplane.workflows import dag, definitions, query_runs, store
from agentplane.workflows.jobs import enqueue_tasks
from agentplane.workflows.models import (
    CallPage,
    Run,
    RunCall,
    RunIn,
    RunPage,
    RunTree,
    ToolExecution,
)

COMPLEXITY = {"SIMPLE": 0.2, "STANDARD": 0.5, "COMPLEX": 0.8}


async def create_run(conn: Connection, db: Database, principal: Principal, body: RunIn) -> Run:
    """Everything in the caller's transaction: the run, its tasks and dependencies, and
    one job per ready task. A bad request raises before anything is written."""
    workflow_id = version = None
    model = body.model
    if model is not None:
        await llm.check_model(conn, model)
    if body.workflow is not None:
        workflow = await definitions.get_workflow(conn, body.workflow, body.version)
        workflow_id, version, data = workflow.id, workflow.version, workflow.definition
        kind, mode, query = "workflow", None, None
    else:
        agent = await query_runs.answering_agent(conn, body.agent)
        data = query_runs.definition(body.mode, agent)
        if model is None and body.agent is None:
            model = await query_runs.default_model(conn)
        kind, mode, query = "query", body.mode, body.query
        body = body.model_copy(update={"inputs": {"query": body.query}})
    agents = {
        r["id"]: r
        for r in await agents_store.get_many(
            conn, sorted({n["agent"] for n in data["tasks"].values()})
        )
    }
    graph = dag.validate(data, set(agents))  # agents may have been deleted since saving
    inactive = sorted(s for s, a in agents.items() if a["status"] != "active")
    if inactive:
        raise Conflict(f"agent {', '.join(inactive)} is not active")
    inputs = dag.check_inputs(graph.definition, body.inputs)
    run_id = uuid.uuid4()
    ids = {name: uuid.uuid4() for name in graph.order}
    tasks = []
    for name in graph.order:
        node = graph.definition.tasks[name]
        ready = not graph.deps[name]
        tasks.append(
            {
                "id": ids[name],
                "node": name,
                "agent_id": agents[node.agent]["uid"],
                "parent_task_id": None,
                "status": "queued" if ready else "pending",
                "instruction": node.instruction,
                "pending_deps": len(graph.deps[name]),
                "dispatch": 1 if ready else 0,
                "max_retries": node.retry.max_retries,
                "retry_delay_s": float(node.retry.delay_s),
                "timeout_s": float(node.timeout_s),
                "run_id": run_id,
            }
        )
    call_stack: list[str] = []
    if body.parent_run_id is not None:
        parent = await store.get_run(conn, body.parent_run_id)
        if parent is None:
            raise NotFound(f"run {body.parent_run_id} not found")
        call_stack = [*parent["call_stack"], str(parent["id"])]
    await store.insert_run(
        conn,
        {
            "id": run_id,
            "workflow_id": workflow_id,
            "workflow_version": version,
            "kind": kind,
            "mode": mode,
            "query": query,
            "inputs": inputs,
            "total_tasks": len(tasks),
            "complexity_score": COMPLEXITY.get(mode or ""),
            "parent_run_id": body.parent_run_id,
            "call_stack": call_stack,
            "session_id": body.session_id,
            "user_id": principal.user_id,
            "api_key_id": principal.api_key_id,
            "metadata": body.metadata,
            "model": model,
        },
    )
    await store.insert_tasks(conn, run_id, tasks)
    await store.insert_dependencies(
        conn, run_id, [(ids[n], ids[d]) for n in graph.order for d in graph.deps[n]]
    )
    await enqueue_tasks(
        conn, db, principal.tenant_id, [t for t in tasks if t["status"] == "queued"]
    )
    return await get_run(conn, run_id)


async def get_run(conn: Connection, run_id: UUID) -> Run:
    row = await store.get_run(conn, run_id)
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return Run.model_validate(row)


async def list_runs(
    conn: Connection,
    *,
    status: str | None = None,
    workflow: str | None = None,
    cursor: str | None = None,
    limit: int = 50,
    id_prefix: str | None = None,
    agent: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> RunPage:
    rows = await store.list_runs(
        conn,
        status=status,
        workflow=workflow,
        before=pagination.decode(cursor) if cursor else None,
        limit=limit + 1,
        id_range=ids.optional_bounds(id_prefix, "run"),
        agent=agent,
        since=since,
        until=until,
    )
    items = [Run.model_validate(r) for r in rows[:limit]]
    more = len(rows) > limit
    last = items[-1] if more else None
    return RunPage(
        items=items, next_cursor=pagination.encode(last.created_at, last.id) if last else None
    )


def _money(amount: Decimal | None) -> str | None:
    """An amount in the tree's plain dicts, written as Money writes it ("0", not "0E-10")."""
    return None if amount is None else plain(amount)


def _cost(amount: Decimal, unpriced: int) -> dict[str, Any]:
    """A task's or execution's cost as Run gives one: unknown (null) when no call was
    priced, else the known part, with how many calls have no price."""
    return {
        "cost_usd": _money(known_cost(amount, unpriced)),
        "unpriced_calls": unpriced,
        "cost_complete": unpriced == 0,
    }


async def run_tree(conn: Connection, run_id: UUID, *, calls: bool = True) -> RunTree:
    """The run and everything under it; without `calls`, its agent executions carry no
    LLM or tool calls (a run with thousands of them pages them: run_calls)."""
    run = await get_run(conn, run_id)
    rows = await store.run_tree_rows(conn, run_id, calls=calls)
    deps: dict[UUID, list[str]] = {}
    for d in rows["dependencies"]:
        deps.setdefault(d["task_id"], []).append(d["depends_on_task_id"])
    by_exec: dict[str, dict[UUID, list[dict]]] = {
        k: {} for k in ("transitions", "tool_executions", "llm_calls")
    }
    for kind in by_exec:
        for r in rows[kind]:
            by_exec[kind].setdefault(r["agent_execution_id"], []).append(
                {k: v for k, v in r.items() if k != "agent_execution_id"}
            )
    executions: dict[UUID, list[dict]] = {}
    unpriced: dict[UUID, int] = {}
    for e in rows["agent_executions"]:
        e = {**e, **{k: by_exec[k].get(e["id"], []) for k in by_exec}}
        for call in e["llm_calls"]:
            call["cost_usd"] = _money(call["cost_usd"])
        n = sum(c["status"] == "completed" and c["cost_usd"] is None for c in e["llm_calls"])
        e.update(_cost(e["cost_usd"], n))
        unpriced[e["task_id"]] = unpriced.get(e["task_id"], 0) + n
        executions.setdefault(e["task_id"], []).append(e)
    tasks = [
        {
            "id": t["id"],
            "node": t["node"],
            "agent": t["agent"],
            "status": t["status"],
            "parent_task_id": t["parent_task_id"],
            "depends_on": deps.get(t["id"], []),
            "instruction": t["instruction"],
            "output": t["output"],
            "error": t["error"],
            "retry_count": t["retry_count"],
            "tokens_used": t["tokens_used"],
            **_cost(t["cost_usd"], unpriced.get(t["id"], 0)),
            "started_at": t["started_at"],
            "completed_at": t["completed_at"],
            "duration_ms": t["duration_ms"],
            "deadline_at": t["deadline_at"],
            "agent_executions": executions.get(t["id"], []),
        }
        for t in rows["tasks"]
    ]
    return RunTree(
        run=run,
        tasks=tasks,
        input_requests=rows["input_requests"],
        interactions=rows["interactions"],
        run_data=rows["run_data"],
    )


async def run_calls(
    conn: Connection,
    run_id: UUID,
    *,
    task_id: UUID | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> CallPage:
    """A page of the run's LLM and tool calls in the order they started (a waterfall);
    `next_cursor` continues after the page's last call."""
    await get_run(conn, run_id)
    rows = await store.run_calls(
        conn, run_id, task_id=task_id,
        after=pagination.decode(cursor) if cursor else None, limit=limit + 1,
    )
    items = [RunCall.model_validate(r) for r in rows[:limit]]
    last = items[-1] if len(rows) > limit else None
    return CallPage(
        items=items, next_cursor=pagination.encode(last.created_at, last.id) if last else None
    )


async def get_tool_execution(
    conn: Connection, run_id: UUID, tool_execution_id: UUID
) -> ToolExecution:
    row = await store.get_tool_execution(conn, run_id, tool_execution_id)
    if row is None:
        raise NotFound(f"tool execution {tool_execution_id} not found in run {run_id}")
    return ToolExecution.model_validate(row)
