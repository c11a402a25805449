"""Running runs from the command line: a local tenant, an in-process worker, and a live
view of the run's tree (tasks with states, tokens and cost) while it executes."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any
from uuid import UUID

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agentplane.auth import scopes as sc
from agentplane.auth.models import Principal
from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.money import shown
from agentplane.workflows.models import TERMINAL, RunTree

COLORS = {
    "pending": "dim",
    "queued": "cyan",
    "running": "yellow",
    "waiting": "magenta",
    "paused": "magenta",
    "completed": "green",
    "failed": "red",
    "cancelled": "red",
}
ICONS = {
    "pending": "·",
    "queued": "○",
    "running": "◐",
    "waiting": "?",
    "completed": "✓",
    "failed": "✗",
    "cancelled": "⊘",
    "paused": "‖",
}


async def owner_principal(db: Database, tenant: str | None) -> Principal:
    """The CLI acts as the owner of the tenant it is given (slug or id); it never makes
    one up: an unknown tenant is an error naming the known ones."""
    from agentplane.tenancy import service as tenancy

    tenant_id = await tenancy.resolve_tenant_admin(db, tenant)
    return _owner(tenant_id, await tenancy.tenant_owner_admin(db, tenant_id))


async def demo_principal(db: Database, slug: str) -> tuple[Principal, bool]:
    """The owner of the demo tenant, created on first use; and whether it was."""
    from agentplane.tenancy import service as tenancy
    from agentplane.tenancy import store as tenancy_store
    from agentplane.tenancy.service import NewUser

    async with db.admin_connection() as conn:
        found = await tenancy_store.tenant_by_slug(conn, slug)
    if found is not None:
        return await owner_principal(db, slug), False
    tenant, user_id = await tenancy.create_tenant(
        db, name=slug, slug=slug, owner=NewUser(email=f"owner@{slug}.localhost")
    )
    return _owner(tenant["id"], user_id), True


def _owner(tenant_id: UUID, user_id: UUID | None) -> Principal:
    return Principal(
        tenant_id=tenant_id,
        user_id=user_id,
        role="owner",
        scopes=frozenset(sc.ALL_SCOPES),
        api_key_id=None,
    )


@contextlib.asynccontextmanager
async def in_process_worker(
    db: Database, settings: Settings, concurrency: int = 8
) -> AsyncIterator[None]:
    from agentplane.queue.registry import registry
    from agentplane.queue.worker import Worker, WorkerOptions
    from agentplane.runtime import handler

    handler.use(db, settings)
    worker = Worker(
        db.endpoints.app,
        WorkerOptions(
            poll_interval=0.05,
            concurrency=concurrency,
            schedules=False,
            worker_id=f"cli-{uuid.uuid4().hex[:8]}",
        ),
        registry,
    )
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.stop()
        await asyncio.wait_for(task, 60)


async def follow(
    api: Any,
    run_id: str,
    on_update: Callable[[RunTree], None],
    interval: float = 0.1,
    timeout: float | None = None,  # noqa: ASYNC109
) -> RunTree:
    """Poll the run's tree until it is finished (or waits on a person)."""
    loop = asyncio.get_running_loop()
    end = None if timeout is None else loop.time() + timeout
    while True:
        tree = RunTree.model_validate(await api.get(f"/v1/runs/{run_id}/tree"))
        on_update(tree)
        status = tree.run.status
        if status in TERMINAL or (status == "paused" and tree.run.pending_input_requests):
            return tree
        if end is not None and loop.time() > end:
            return tree
        await asyncio.sleep(interval)


def money(value: Any, unpriced: int = 0) -> str:
    return shown(None if value is None else Decimal(value), unpriced)


def _task_cost(task: dict[str, Any]) -> str:
    cost = task["cost_usd"]
    return shown(None if cost is None else Decimal(cost), task.get("unpriced_calls", 0))


def _call_cost(call: dict[str, Any]) -> str:
    if call["status"] != "completed":
        return "no cost"
    return "cost " + ("unknown (no price)" if call["cost_usd"] is None else shown(
        Decimal(call["cost_usd"])))


def render(tree: RunTree, *, detail: bool = False) -> Group:
    run = tree.run
    color = COLORS.get(run.status, "white")
    title = Text.assemble(
        ("run ", "bold"),
        (str(run.id)[:8], "bold cyan"),
        "  ",
        (run.status, f"bold {color}"),
        f"  {run.completed_tasks}/{run.total_tasks} tasks · {run.total_tokens} tokens · "
        f"{shown(run.total_cost_usd, run.unpriced_calls)}",
    )
    root = Tree(title)
    children: dict[Any, Tree] = {}
    for task in tree.tasks:
        execs = task["agent_executions"]
        state = execs[-1]["state"] if execs else ""
        tokens = task["tokens_used"] or sum(e["tokens_used"] for e in execs)
        label = Text.assemble(
            (f"{ICONS.get(task['status'], '?')} ", COLORS.get(task["status"], "white")),
            (task["node"], "bold"),
            f" ({task['agent']})  ",
            (task["status"], COLORS.get(task["status"], "white")),
            (f" {state}" if state and task["status"] == "running" else "", "yellow"),
            f"  {tokens} tok · {_task_cost(task)}",
            (f"  {task['error']}" if task["error"] else "", "red"),
        )
        parent = children.get(task["parent_task_id"], root)
        node = parent.add(label)
        children[task["id"]] = node
        if detail:
            for e in execs:
                states = " → ".join(t["to_state"] for t in e["transitions"])
                branch = node.add(Text(f"agent execution #{e['attempt']}: {states}", "dim"))
                for call in e["llm_calls"]:
                    branch.add(
                        Text(
                            f"LLM {call['provider']}/{call['model']}: {call['prompt_tokens']}+"
                            f"{call['completion_tokens']} tokens, {call['latency_ms']} ms, "
                            f"{_call_cost(call)}"
                            + (f", {call['error']}" if call["error"] else ""),
                            "blue",
                        )
                    )
                for tool in e["tool_executions"]:
                    mark = "✓" if tool["success"] else "✗"
                    branch.add(
                        Text(
                            f"tool {tool['tool_name']} {mark} "
                            f"{(tool['output'] or tool['error'] or '')[:80]}",
                            "magenta",
                        )
                    )
    parts: list[Any] = [root]
    if detail and tree.interactions:
        for i in tree.interactions:
            parts.append(
                Text(
                    f"  {i['interaction_type']}: {i['from_agent']} → {i['to_agent']}: "
                    f"{(i['message'] or '')[:80]}",
                    "magenta",
                )
            )
    for req in tree.input_requests:
        if req["status"] == "pending":
            parts.append(Text(f"  waiting for input {req['id']}: {req['prompt'][:100]}", "magenta"))
    return Group(*parts)


def summary(tree: RunTree) -> Table:
    run = tree.run
    table = Table(show_header=False, box=None, padding=(0, 2))
    table.add_row("run", str(run.id))
    table.add_row("status", Text(run.status, COLORS.get(run.status, "white")))
    table.add_row(
        "tasks",
        f"{run.completed_tasks} completed, {run.failed_tasks} failed, {run.total_tasks} in all",
    )
    table.add_row(
        "tokens",
        f"{run.total_tokens} ({run.prompt_tokens} prompt, {run.completion_tokens} completion)",
    )
    unpriced = run.unpriced_calls
    table.add_row(
        "cost",
        shown(run.total_cost_usd, unpriced)
        + (f"  ({unpriced} call{'s' if unpriced > 1 else ''} without a price)" if unpriced else ""),
    )
    table.add_row("duration", f"{run.duration_ms} ms" if run.duration_ms is not None else "-")
    table.add_row("agents", str(run.agents_used))
    table.add_row("tools", str(run.tools_invoked))
    if run.error:
        table.add_row("error", Text(run.error, "red"))
    return table


async def run_and_show(
    api: Any, body: dict[str, Any], console: Any, *, wait: bool = True, detail: bool = False
) -> RunTree:
    """Start a run through the API and show its tree live until it ends; locally its
    tasks run in this process, on a shared server its workers run them."""
    from rich.live import Live

    created = await api.send("POST", "/v1/runs", body)
    if not wait:
        return RunTree.model_validate(await api.get(f"/v1/runs/{created['id']}/tree"))
    here = contextlib.nullcontext() if api.remote else in_process_worker(api.db, api.settings)
    async with here:
        with Live(console=console, refresh_per_second=12, transient=False) as live:
            tree = await follow(api, created["id"], lambda t: live.update(render(t)))
            live.update(render(tree, detail=detail))
        console.print()
    return tree
