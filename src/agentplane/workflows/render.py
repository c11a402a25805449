"""A run's tree on a terminal: its tasks with their states, tokens and cost, and (in
detail) each agent execution's states, LLM and tool calls; and the run's summary."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agentplane.money import shown
from agentplane.workflows.models import RunTree

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
