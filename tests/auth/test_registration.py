"""AGENTPLANE_REGISTRATION: who may sign up over HTTP (open, invite, closed), its
default from AGENTPLANE_ENV, and a refused registration writing nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from agentplane.app import create_app
from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.conftest import make_tenant

PASSWORD = "correct horse battery"
TABLES = ("tenants", "users", "memberships", "login_sessions", "invitations", "audit_logs")


@asynccontextmanager
async def server(
    settings: Settings, db: Database, registration: str
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings.model_copy(update={"registration": registration}), db=db)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


async def counts(db: Database) -> dict[str, int]:
    out = {}
    async with db.admin_connection() as conn:
        for table in TABLES:
            cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
            out[table] = (await cur.fetchone())["n"]
        cur = await conn.execute(
            "SELECT count(*) AS n FROM invitations WHERE accepted_at IS NOT NULL"
        )
        out["accepted invitations"] = (await cur.fetchone())["n"]
    return out


async def invitation(client: httpx.AsyncClient, db: Database, email: str) -> str:
    owner = await make_tenant(db)
    r = await client.post(
        "/v1/invitations", headers=owner.headers, json={"email": email, "role": "developer"}
    )
    assert r.status_code == 201, r.text
    return r.json()["token"]


def new_tenant(email: str, slug: str) -> dict[str, Any]:
    return {"email": email, "password": PASSWORD, "tenant_slug": slug}


def refused(r: httpx.Response, *words: str) -> None:
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
    detail = r.json()["detail"]
    for word in ("AGENTPLANE_REGISTRATION", *words):
        assert word in detail, detail


def test_default_is_open_in_development_only() -> None:
    assert Settings(env="development").registration == "open"
    assert Settings(env="production").registration == "closed"
    assert Settings(env="test").registration == "closed"
    assert Settings(env="production", registration="invite").registration == "invite"


async def test_open_registers_a_new_tenant(settings: Settings, db: Database) -> None:
    async with server(settings, db, "open") as c:
        r = await c.post("/v1/auth/register", json=new_tenant("ann@open.test", "open-org"))
        assert r.status_code == 201, r.text
        me = await c.get("/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["tenant_slug"] == "open-org" and me.json()["role"] == "owner"


async def test_invite_refuses_a_new_tenant_but_takes_an_invitation(
    settings: Settings, db: Database
) -> None:
    async with server(settings, db, "invite") as c:
        token = await invitation(c, db, "bob@invite.test")
        before = await counts(db)
        r = await c.post("/v1/auth/register", json=new_tenant("bob@invite.test", "bob-org"))
        refused(r, "invitation", "agentplane tenant create")
        assert await counts(db) == before

        r = await c.post(
            "/v1/auth/register",
            json={"email": "bob@invite.test", "password": PASSWORD, "invitation": token},
        )
        assert r.status_code == 201, r.text
        me = await c.get("/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["email"] == "bob@invite.test" and me.json()["role"] == "developer"
    assert (await counts(db))["accepted invitations"] == before["accepted invitations"] + 1


@pytest.mark.parametrize("with_invitation", [False, True])
async def test_closed_refuses_every_registration(
    settings: Settings, db: Database, with_invitation: bool
) -> None:
    email = f"cy{int(with_invitation)}@closed.test"
    async with server(settings, db, "closed") as c:
        body = new_tenant(email, f"closed-{int(with_invitation)}")
        if with_invitation:
            token = await invitation(c, db, email)
            body = {"email": email, "password": PASSWORD, "invitation": token}
        before = await counts(db)
        r = await c.post("/v1/auth/register", json=body)
    refused(r, "closed", "agentplane user create")
    assert await counts(db) == before


def test_config_shows_the_effective_value(cli) -> None:
    def value(result) -> str:
        assert result.returncode == 0, result.stderr
        rows = [line.split("│") for line in result.stdout.splitlines() if line.count("│") >= 3]
        return next(r[2].strip() for r in rows if r[1].strip() == "AGENTPLANE_REGISTRATION")

    assert value(cli("config")) == "closed"  # AGENTPLANE_ENV=test
    assert value(cli("config", AGENTPLANE_ENV="development")) == "open"
    assert value(cli("config", AGENTPLANE_REGISTRATION="invite")) == "invite"


def test_a_bad_value_is_one_line(cli) -> None:
    result = cli("config", AGENTPLANE_REGISTRATION="anyone")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "AGENTPLANE_REGISTRATION" in lines[0] and "'invite'" in lines[0]
    assert "Traceback" not in result.stderr
