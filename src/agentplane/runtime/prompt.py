"""Prompt building: the agent's instructions, the task's instruction rendered with the
run's inputs and upstream outputs, shared run data and the session's context."""

from __future__ import annotations

import json
from typing import Any

from agentplane.workflows import dag

MAX_UPSTREAM_CHARS = 4000


def output_text(output: Any) -> str:
    if isinstance(output, dict):
        return str(output.get("text", ""))
    return "" if output is None else str(output)


def system_prompt(agent: dict[str, Any]) -> str:
    parts = [f"You are {agent['name']}, {agent['role']}."]
    if agent.get("specialties"):
        parts.append("Specialties: " + ", ".join(agent["specialties"]) + ".")
    if agent.get("instructions"):
        parts.append(agent["instructions"])
    return "\n".join(parts)


def user_prompt(
    instruction: str,
    inputs: dict[str, Any],
    upstream: list[dict[str, Any]],
    run_data: dict[str, Any],
    session_context: dict[str, Any] | None,
) -> str:
    outputs = {u["node"]: output_text(u["output"]) for u in upstream}
    parts = [dag.render(instruction, inputs, outputs, run_data)]
    # What the instruction placed itself is not repeated after it.
    placed = {"task": set(), "data": set()}
    for found in dag.TEMPLATE.finditer(instruction):
        ref = dag.REFERENCE.match(found.group(1))
        if ref and (ref.group("task") or ref.group("data")):
            kind = "task" if ref.group("task") else "data"
            placed[kind].add(ref.group(kind))
    rest = [u for u in upstream if u["node"] not in placed["task"]]
    if rest:
        parts.append("Results from the team so far:")
        for u in rest:
            parts.append(f"- {u['node']} ({u['agent']}): {outputs[u['node']][:MAX_UPSTREAM_CHARS]}")
    shared = {k: v for k, v in run_data.items() if k not in placed["data"]}
    if shared:
        parts.append("Shared run data: " + json.dumps(shared)[:MAX_UPSTREAM_CHARS])
    if session_context:
        parts.append("Session context: " + json.dumps(session_context)[:MAX_UPSTREAM_CHARS])
    return "\n".join(parts)
