"""Rules and transactions of workflows and runs: saving validates the DAG; creating a
run writes its tasks and dependencies and enqueues the ready ones in one transaction;
control (cancel, pause, resume, retry) and input requests."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import jsonschema

from agentplane import ids, pagination
from agentplane.agents import store as agents_store
from agentplane.auth.models import Principal
from agentplane.db.pool import Connection, Database
from agentplane.errors import Conflict, NotFound, ValidationFailed
from agentplane.events.emit import emit, event
from agentplane.llm import service as llm
from agentplane.llm import store as llm_store
from agentplane.money import known_cost, plain
from agentplane.queue.service import ask_to_stop
from agentplane.workflows import dag, store
from agentplane.workflows.jobs import JOB_TYPE, enqueue_tasks
from agentplane.workflows.models import (
    TERMINAL,
    CallPage,
    InputRequest,
    Run,
    RunCall,
    RunIn,
    RunPage,
    RunTree,
    ToolExecution,
    Workflow,
    WorkflowIn,
    WorkflowVersion,
)

DEFAULT_AGENT = "assistant"
DEFAULT_MODEL = "offline/offline-1"
COMPLEXITY = {"SIMPLE": 0.2, "STANDARD": 0.5, "COMPLEX": 0.8}


# -- workflows -------------------------------------------------------------------------------


async def save_workflow(conn: Connection, body: WorkflowIn, user_id: UUID | None) -> Workflow:
    """Create the workflow, or add a version when the name exists."""
    if body.definition is not None:
        if not isinstance(body.definition, dict):
            raise ValidationFailed.listing(
                [dag.problem("definition", body.definition, "must be an object with `tasks`")]
            )
        data, fmt, source = body.definition, "json", json.dumps(body.definition, indent=2)
    else:
        data, fmt = dag.parse(body.source or "", body.format)
        source = body.source or ""
    name = body.name or data.get("name")
    if not name:
        raise ValidationFailed.listing(
            [dag.problem("name", None, "the workflow needs a name (in the body or the definition)")]
        )
    data = {**data, "name": name}
    dag.validate(data, await agents_store.slugs(conn))
    description = body.description or data.get("description")
    existing = await store.lock_workflow(conn, name)
    if existing is None:
        workflow_id, version = (
            (await store.insert_workflow(conn, name, description, user_id))["id"],
            1,
        )
    else:
        workflow_id = existing["id"]
        version = await store.bump_workflow(conn, workflow_id, description)
    await store.insert_version(conn, workflow_id, version, data, source, fmt, user_id)
    return await get_workflow(conn, str(workflow_id), version)


async def get_workflow(conn: Connection, ref: str, version: int | None = None) -> Workflow:
    row = await store.get_workflow(conn, ref, version)
    if row is None:
        what = f"workflow {ref}" + (f" version {version}" if version else "")
        raise NotFound(f"{what} not found")
    return Workflow.model_validate(row)


async def list_workflows(conn: Connection) -> list[Workflow]:
    return [Workflow.model_validate(r) for r in await store.list_workflows(conn)]


async def list_versions(conn: Connection, ref: str) -> list[WorkflowVersion]:
    workflow = await get_workflow(conn, ref)
    return [WorkflowVersion.model_validate(r) for r in await store.list_versions(conn, workflow.id)]


def workflow_graph(workflow: Workflow) -> dict[str, list[str]]:
    """A saved workflow's tasks, each with its upstream tasks (declared, and implied by
    its templates), in a topological order: what a picture of it draws."""
    agents = {t["agent"] for t in workflow.definition.get("tasks", {}).values()}
    graph = dag.validate(workflow.definition, agents)
    return {name: graph.deps[name] for name in graph.order}


async def delete_workflow(conn: Connection, ref: str) -> None:
    workflow = await get_workflow(conn, ref)
    if await store.workflow_has_runs(conn, workflow.id):
        raise Conflict(f"workflow {workflow.name} has runs; it is kept for their history")
    await store.delete_workflow(conn, workflow.id)


# -- runs --------------------------------------------------------------------------------------


def query_definition(mode: str, agent: str) -> dict[str, Any]:
    """A single query as a small DAG: SIMPLE answers, STANDARD plans first, COMPLEX plans,
    researches and critiques in parallel, then synthesises."""
    q = "{{ inputs.query }}"
    tasks: dict[str, Any] = {}
    if mode == "SIMPLE":
        tasks["answer"] = {"agent": agent, "instruction": q}
    elif mode == "STANDARD":
        tasks["analyze"] = {"agent": agent, "instruction": f"Analyse the request and plan: {q}"}
        tasks["answer"] = {
            "agent": agent,
            "instruction": f"Answer, following the plan: {q}",
            "depends_on": ["analyze"],
        }
    else:
        tasks["plan"] = {"agent": agent, "instruction": f"Plan how to answer: {q}"}
        tasks["research"] = {
            "agent": agent,
            "instruction": f"Research the facts for: {q}",
            "depends_on": ["plan"],
        }
        tasks["critique"] = {
            "agent": agent,
            "instruction": f"List the risks and doubts of: {q}",
            "depends_on": ["plan"],
        }
        tasks["synthesize"] = {
            "agent": agent,
            "instruction": f"Write the final answer to: {q}",
            "depends_on": ["research", "critique"],
        }
    return {"name": "query", "inputs": {"query": {"required": True}}, "tasks": tasks}


async def _query_agent(conn: Connection, slug: str | None) -> str:
    """The agent named, or the default assistant (made on first use)."""
    if slug:
        if await agents_store.get(conn, slug) is None:
            known = sorted(await agents_store.slugs(conn))
            raise ValidationFailed.listing(
                [
                    dag.problem(
                        "agent",
                        slug,
                        f"unknown agent {slug!r} (known: {', '.join(known) or 'none'}; omit "
                        f"`agent` for the default {DEFAULT_AGENT!r})",
                    )
                ]
            )
        return slug
    if await agents_store.get(conn, DEFAULT_AGENT) is None:
        await agents_store.insert(
            conn,
            {
                "id": DEFAULT_AGENT,
                "name": "Assistant",
                "role": "generalist",
                "model": DEFAULT_MODEL,
                "specialties": ["general"],
                "instructions": "You are a helpful, precise assistant.",
                "personality_emoji": None,
                "tools": [],
                "status": "active",
                "project_id": None,
                "metadata": {},
            },
        )
    return DEFAULT_AGENT


async def _default_model(conn: Connection) -> str | None:
    """What the default agent of a query run answers with while it still has the built-in
    model: the tenant's default provider (its enabled one of highest weight) with that
    provider's model, once it has registered one."""
    agent = await agents_store.get(conn, DEFAULT_AGENT)
    if agent is not None and agent["model"] != DEFAULT_MODEL:
        return None  # someone chose its model
    provider = await llm_store.default_provider(conn)
    if provider is None or provider["tenant_id"] is None or not provider["model"]:
        return None
    return f"{provider['name']}/{provider['model']}"


async def create_run(conn: Connection, db: Database, principal: Principal, body: RunIn) -> Run:
    """Everything in the caller's transaction: the run, its tasks and dependencies, and
    one job per ready task. A bad request raises before anything is written."""
    workflow_id = version = None
    model = body.model
    if model is not None:
        await llm.check_model(conn, model)
    if body.workflow is not None:
        workflow = await get_workflow(conn, body.workflow, body.version)
        workflow_id, version, data = workflow.id, workflow.version, workflow.definition
        kind, mode, query = "workflow", None, None
    else:
        data = query_definition(body.mode, await _query_agent(conn, body.agent))
        if model is None and body.agent is None:
            model = await _default_model(conn)
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


# -- control -----------------------------------------------------------------------------------


async def _locked(conn: Connection, run_id: UUID) -> dict[str, Any]:
    row = await store.get_run(conn, run_id, lock=True)
    if row is None:
        raise NotFound(f"run {run_id} not found")
    return row


async def cancel_run(conn: Connection, run_id: UUID, reason: str = "cancelled") -> Run:
    run = await _locked(conn, run_id)
    if run["status"] in TERMINAL:
        raise Conflict(f"run {run_id} is already {run['status']}")
    cancelled = await store.cancel_open_tasks(
        conn, run_id, reason, ("pending", "queued", "running", "waiting")
    )
    # The workers running its tasks stop them now, cancelling their provider calls.
    await ask_to_stop(conn, run["tenant_id"], JOB_TYPE, {"run_id": str(run_id)})
    await store.cancel_input_requests(conn, run_id)
    await store.set_run_status(conn, run_id, "cancelled", error=reason)
    await emit(
        conn,
        run["tenant_id"],
        run_id,
        [event("run.cancelled", message=reason, tasks_cancelled=len(cancelled))],
    )
    return await get_run(conn, run_id)


async def pause_run(conn: Connection, run_id: UUID) -> Run:
    run = await _locked(conn, run_id)
    if run["status"] not in ("pending", "running"):
        raise Conflict(f"run {run_id} is {run['status']}; only a pending or running run pauses")
    await store.set_run_status(conn, run_id, "paused", paused_by="user")
    await emit(conn, run["tenant_id"], run_id, [event("run.paused", message="paused by a user")])
    return await get_run(conn, run_id)


async def resume_run(conn: Connection, db: Database, run_id: UUID) -> Run:
    """Queued tasks whose jobs were skipped while paused get fresh jobs."""
    run = await _locked(conn, run_id)
    if run["status"] != "paused" or run["metadata"].get("paused_by") != "user":
        raise Conflict(f"run {run_id} is not paused by a user (it is {run['status']})")
    status = "running" if run["started_at"] else "pending"
    await store.set_run_status(conn, run_id, status)
    ready = await store.dispatch_tasks(conn, await store.queued_tasks(conn, run_id))
    for t in ready:
        t["run_id"] = run_id
    await enqueue_tasks(conn, db, run["tenant_id"], ready)
    await emit(conn, run["tenant_id"], run_id, [event("run.resumed", tasks_queued=len(ready))])
    return await get_run(conn, run_id)


async def retry_task(conn: Connection, db: Database, run_id: UUID, task_id: UUID) -> Run:
    """A failed task runs again; the run, failed because of it, runs on."""
    run = await _locked(conn, run_id)
    task = await store.get_task(conn, task_id, lock=True)
    if task is None or task["run_id"] != run_id:
        raise NotFound(f"task {task_id} not found in run {run_id}")
    if task["status"] != "failed":
        raise Conflict(f"task {task['node']} is {task['status']}; only a failed task is retried")
    if run["status"] == "cancelled":
        raise Conflict(f"run {run_id} is cancelled")
    await store.reopen_failed_task(conn, run_id, task_id)
    ready = await store.dispatch_tasks(conn, [task_id, *await store.reopen_cancelled(conn, run_id)])
    for t in ready:
        t["run_id"] = run_id
    reopened = []
    if run["status"] == "failed":
        await store.set_run_status(conn, run_id, "running")
        # The one event that opens a run's closed log again (see events_append,
        # events/sql/functions.sql).
        reopened = [event("run.resumed", message="a failed task is retried", by="user")]
    await enqueue_tasks(conn, db, run["tenant_id"], ready)
    await emit(
        conn,
        run["tenant_id"],
        run_id,
        [
            *reopened,
            event("task.retrying", task_id=task_id, message="retried by a user", by="user"),
        ],
    )
    return await get_run(conn, run_id)


# -- input requests ----------------------------------------------------------------------------


async def list_input_requests(
    conn: Connection, run_id: UUID | None = None, status: str | None = None,
    id_prefix: str | None = None,
) -> list[InputRequest]:
    if run_id is not None:
        await get_run(conn, run_id)
    id_range = ids.optional_bounds(id_prefix, "input request")
    return [
        InputRequest.model_validate(r)
        for r in await store.list_input_requests(conn, run_id, status, id_range)
    ]


async def answer_input_request(
    conn: Connection, db: Database, request_id: UUID, response: Any, user_id: UUID | None
) -> InputRequest:
    """The answer must match the request's schema; then the task runs again from where
    it asked, and the run, paused while waiting, runs on."""
    req = await store.get_input_request(conn, request_id, lock=True)
    if req is None:
        raise NotFound(f"input request {request_id} not found")
    if req["status"] != "pending":
        raise Conflict(f"input request {request_id} is {req['status']}")
    try:
        jsonschema.validate(response, req["schema"])
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "response"
        raise ValidationFailed(
            f"the answer does not match the schema at {where}: {exc.message}"
        ) from None
    except jsonschema.SchemaError as exc:
        raise Conflict(f"the request's schema is invalid: {exc.message}") from None
    run = await _locked(conn, req["run_id"])
    answered = await store.answer_input_request(conn, request_id, response, user_id)
    events = [event("input.answered", task_id=req["task_id"], request_id=request_id)]
    if (
        await store.pending_input_count(conn, req["run_id"]) == 0
        and run["status"] == "paused"
        and run["metadata"].get("paused_by") == "input"
    ):
        await store.set_run_status(conn, req["run_id"], "running")
        events.append(event("run.resumed", message="input received"))
    task = await store.get_task(conn, req["task_id"], lock=True)
    if task["status"] == "waiting":
        ready = await store.dispatch_tasks(conn, [task["id"]])
        await enqueue_tasks(conn, db, run["tenant_id"], ready)
    await emit(conn, run["tenant_id"], req["run_id"], events)
    return InputRequest.model_validate(answered)


async def put_run_data(conn: Connection, run_id: UUID, body: Any) -> dict[str, Any]:
    await get_run(conn, run_id)
    return await store.put_run_data(
        conn, {**body.model_dump(), "run_id": run_id, "task_id": None, "agent": None}
    )


async def get_run_data(conn: Connection, run_id: UUID) -> list[dict[str, Any]]:
    await get_run(conn, run_id)
    return await store.get_run_data(conn, run_id)
