"""A single query as a run: the small DAG each mode (SIMPLE, STANDARD, COMPLEX) makes,
and the default assistant that answers when no agent is named."""

from __future__ import annotations

from typing import Any

from agentplane.agents import store as agents_store
from agentplane.db.pool import Connection
from agentplane.errors import ValidationFailed
from agentplane.llm import store as llm_store
from agentplane.workflows import dag

DEFAULT_AGENT = "assistant"
DEFAULT_MODEL = "offline/offline-1"


def definition(mode: str, agent: str) -> dict[str, Any]:
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


async def answering_agent(conn: Connection, slug: str | None) -> str:
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


async def default_model(conn: Connection) -> str | None:
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
