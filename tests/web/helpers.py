"""Helpers of the dashboard's tests: people with passwords, a browser-like client
signed in through the sign-in form, and the CSRF token of a page."""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from agentplane.db.pool import Database

PASSWORD = "a long passphrase for tests"
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
SIGNIN = re.compile(r'name="csrf" value="([^"]*)"')


@dataclass(frozen=True)
class Person:
    email: str
    password: str
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    slug: str
    role: str


async def person(db: Database, role: str = "owner", *, tenant: Person | None = None,
                 email: str | None = None) -> Person:
    """A user with a password: the owner of a new tenant, or a member of `tenant`."""
    from agentplane.tenancy import members, tenants
    from agentplane.tenancy.users import NewUser

    tag = uuid.uuid4().hex[:10]
    email = email or f"{role}-{tag}@example.com"
    if tenant is None:
        slug = f"w-{tag}"
        row, user_id = await tenants.create_tenant(
            db, name=slug, slug=slug, owner=NewUser(email=email, password=PASSWORD),
            rate_limit_per_hour=1_000_000)
        assert role == "owner"
        return Person(email, PASSWORD, row["id"], user_id, slug, role)
    user_id, _ = await members.add_member(
        db, tenant.tenant_id, NewUser(email=email, password=PASSWORD), role)
    return Person(email, PASSWORD, tenant.tenant_id, user_id, tenant.slug, role)


@asynccontextmanager
async def browser(app) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, over https (the session cookie is Secure here)."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver",
                                 headers={"accept": "text/html"}) as c:
        yield c


async def post_login(client: httpx.AsyncClient, email: str, password: str,
                     **extra: str) -> httpx.Response:
    form = await client.get("/login")
    token = SIGNIN.search(form.text).group(1)
    return await client.post("/login", data={"csrf": token, "email": email,
                                             "password": password, "next": "/", **extra})


async def sign_in(client: httpx.AsyncClient, who: Person) -> str:
    """Sign in through the form; the CSRF token of the session's pages."""
    r = await post_login(client, who.email, who.password)
    assert r.status_code == 303, r.text
    return csrf_of(await client.get("/runs"))


def csrf_of(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return CSRF.search(response.text).group(1)


REVIEW = """
name: review
description: Review a change from two sides, then decide.
inputs:
  change:
    description: the diff to look at
  audience:
    required: false
    default: the team
tasks:
  read:
    agent: reader
    instruction: "Read this change: {{ inputs.change }}"
  check:
    agent: checker
    instruction: "Check this change: {{ inputs.change }}"
  decide:
    agent: decider
    instruction: >-
      Decide for {{ inputs.audience }}: {{ tasks.read.output }} {{ tasks.check.output }}
    depends_on: [check]
"""


@dataclass(frozen=True)
class Team:
    """A tenant whose owner signs in, with an API key, three agents and a workflow."""

    owner: Person
    headers: dict[str, str]


async def team(db: Database, client: httpx.AsyncClient) -> Team:
    from agentplane.auth import keys
    from agentplane.auth.models import ApiKeyIn

    owner = await person(db)
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE tenants SET token_limit = 100000000 WHERE id = %s",
                           [owner.tenant_id])
    _, key = await keys.create_key(
        db, owner.tenant_id,
        ApiKeyIn(name="tests", scopes=["agents:write", "agents:read", "agents:execute",
                                       "workflows:write", "workflows:read", "runs:read",
                                       "runs:write", "events:read", "usage:read", "llm:read"],
                 rate_limit_per_hour=1_000_000, user_id=owner.user_id),
        actor=None)
    headers = {"Authorization": f"Bearer {key}"}
    for slug in ("reader", "checker", "decider"):
        r = await client.post("/v1/agents", headers=headers, json={
            "id": slug, "name": slug.title(), "role": "reviewer", "max_tokens": 200,
            "tools": ["text_stats"]})
        assert r.status_code == 201, r.text
    r = await client.post("/v1/workflows", headers=headers, json={"source": REVIEW})
    assert r.status_code == 201, r.text
    return Team(owner, headers)
