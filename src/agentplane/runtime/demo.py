"""`agentplane demo`: the Tokyo-IA team of five agents and a code-review workflow, run on
the offline provider (no network, no key), with its full trace printed."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.rule import Rule
from rich.text import Text

from agentplane.errors import ValidationFailed
from agentplane.terminal import console

TENANT = "demo"

TEAM: list[dict[str, Any]] = [
    {
        "id": "akira-001",
        "name": "Akira - Code Review Master",
        "role": "code_review",
        "specialties": ["security", "performance", "architecture"],
        "personality_emoji": "侍",
        "tools": ["text_stats"],
        "instructions": "You review code like a master swordsman: precise, unsparing, fair.",
    },
    {
        "id": "yuki-002",
        "name": "Yuki - Test Engineering Specialist",
        "role": "test_engineering",
        "specialties": ["unit_testing", "integration_testing", "e2e_testing"],
        "personality_emoji": "❄️",
        "tools": ["regex_extract"],
        "instructions": "You find every function worth testing and write tests that fail first.",
    },
    {
        "id": "hiro-003",
        "name": "Hiro - Security Sentinel",
        "role": "security_audit",
        "specialties": ["injection", "secrets", "authentication"],
        "personality_emoji": "🛡️",
        "tools": ["regex_extract"],
        "instructions": "You assume every input is hostile and every secret will leak.",
    },
    {
        "id": "sakura-004",
        "name": "Sakura - Documentation Artist",
        "role": "documentation",
        "specialties": ["api_docs", "tutorials", "changelogs"],
        "personality_emoji": "🌸",
        "tools": ["text_stats"],
        "instructions": "You explain code so that a newcomer understands it on first reading.",
    },
    {
        "id": "kenji-005",
        "name": "Kenji - Tech Lead",
        "role": "synthesis",
        "specialties": ["architecture", "prioritisation", "mentoring"],
        "personality_emoji": "🏯",
        "tools": ["handoff"],
        "instructions": "You weigh the team's findings into one plan and ask Akira to review it.",
    },
]

WORKFLOW = """\
name: code-review
description: Review, tests and a security pass in parallel; a synthesis reviewed by Akira.
inputs:
  file: {required: true, description: the code to review}
tasks:
  review:
    agent: akira-001
    instruction: "Review this code for correctness, performance and design:\\n{{ inputs.file }}"
  tests:
    agent: yuki-002
    instruction: "Write unit tests for this code:\\n{{ inputs.file }}"
    retry: {max_retries: 1}
  security:
    agent: hiro-003
    instruction: "Audit this code for security problems:\\n{{ inputs.file }}"
  synthesis:
    agent: kenji-005
    instruction: "Combine the review, the tests and the audit into one plan of fixes."
    depends_on: [review, tests, security]
"""

SAMPLE = """\
import sqlite3

def find_user(db_path, name):
    conn = sqlite3.connect(db_path)
    rows = conn.execute(f"SELECT * FROM users WHERE name = '{name}'").fetchall()
    return rows[0] if rows else None

class Cache:
    def get(self, key, default=None):
        return self.__dict__.get(key, default)
"""


async def seed(db: Any, principal: Any) -> None:
    """The team and the workflow; existing ones are left as they are."""
    from agentplane.agents import service as agents
    from agentplane.agents.models import AgentIn
    from agentplane.errors import NotFound
    from agentplane.workflows import service
    from agentplane.workflows.models import WorkflowIn

    async with db.tenant_connection(principal.tenant_id) as conn:
        existing = {a.id for a in await agents.list_(conn)}
        for spec in TEAM:
            if spec["id"] not in existing:
                await agents.create(conn, AgentIn(**spec, max_tokens=400))
        try:
            await service.get_workflow(conn, "code-review")
        except NotFound:
            await service.save_workflow(conn, WorkflowIn(source=WORKFLOW), principal.user_id)


def demo(
    file: Annotated[
        str | None, typer.Option(help="Review this file instead of the sample.")
    ] = None,
) -> None:
    """Seed the Tokyo-IA team and a code-review workflow, run it offline, print the trace."""
    from pathlib import Path

    from agentplane.client import connected
    from agentplane.runtime.local import demo_principal, render, run_and_show, summary
    from agentplane.tenancy.cli import with_database

    out = console()
    if file and not Path(file).is_file():
        raise ValidationFailed(f"--file {file}: no such file to review")
    code = Path(file).read_text(errors="replace") if file else SAMPLE

    async def go(db: Any) -> Any:
        conf = db.settings
        principal, created = await demo_principal(db, TENANT)
        if created:
            out.print(f"created the tenant {TENANT} (owner@{TENANT}.localhost) for the demo",
                      highlight=False)
        await seed(db, principal)
        out.print(Rule("agentplane demo: the Tokyo-IA team reviews some code"))
        for spec in TEAM:
            out.print(Text.assemble(
                f"  {spec['personality_emoji']}  ", (spec["name"], "bold"),
                f"  ({spec['role']}; tools: {', '.join(spec['tools'])})",
            ))
        out.print()
        body = {"workflow": "code-review", "inputs": {"file": code}}
        async with connected(TENANT, conf, db, here=True) as api:  # the demo is local
            return await run_and_show(api, body, out)

    tree = with_database(go)
    out.print(Rule("trace"))
    out.print(render(tree, detail=True))
    out.print(Rule("summary"))
    out.print(summary(tree))
    out.print(
        f"\nSee it again with: agentplane runs show {tree.run.id} --tenant {TENANT}",
        highlight=False,
    )
    if tree.run.status != "completed":
        raise typer.Exit(1)
