"""The demo's content: the Tokyo-IA team of five agents, a code-review workflow and a
sample to review, seeded in a tenant of its own (`agentplane demo`, in runtime.cli, runs
it on the offline provider: no network, no key)."""

from __future__ import annotations

from typing import Any

from agentplane.agents import service as agents
from agentplane.agents.models import AgentIn
from agentplane.auth.models import Principal
from agentplane.db.pool import Database
from agentplane.errors import NotFound
from agentplane.tenancy import store as tenancy_store
from agentplane.tenancy import tenants
from agentplane.tenancy.users import NewUser
from agentplane.workflows import definitions
from agentplane.workflows.models import WorkflowIn

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


async def demo_principal(db: Database, slug: str) -> tuple[Principal, bool]:
    """The owner of the demo tenant, created on first use; and whether it was."""
    async with db.admin_connection() as conn:
        found = await tenancy_store.tenant_by_slug(conn, slug)
    if found is not None:
        return await tenants.owner_principal(db, slug), False
    tenant, user_id = await tenants.create_tenant(
        db, name=slug, slug=slug, owner=NewUser(email=f"owner@{slug}.localhost")
    )
    return tenants.owner_of(tenant["id"], user_id), True


async def seed(db: Any, principal: Any) -> None:
    """The team and the workflow; existing ones are left as they are."""
    async with db.tenant_connection(principal.tenant_id) as conn:
        existing = {a.id for a in await agents.list_(conn)}
        for spec in TEAM:
            if spec["id"] not in existing:
                await agents.create(conn, AgentIn(**spec, max_tokens=400))
        try:
            await definitions.get_workflow(conn, "code-review")
        except NotFound:
            await definitions.save_workflow(conn, WorkflowIn(source=WORKFLOW), principal.user_id)
