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
    from agentplane.tenancy import service as tenancy
    from agentplane.tenancy.service import NewUser

    tag = uuid.uuid4().hex[:10]
    email = email or f"{role}-{tag}@example.com"
    if tenant is None:
        slug = f"w-{tag}"
        row, user_id = await tenancy.create_tenant(
            db, name=slug, slug=slug, owner=NewUser(email=email, password=PASSWORD),
            rate_limit_per_hour=1_000_000)
        assert role == "owner"
        return Person(email, PASSWORD, row["id"], user_id, slug, role)
    user_id, _ = await tenancy.add_member(
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
