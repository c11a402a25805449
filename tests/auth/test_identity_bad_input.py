"""Bad input: a problem+json 4xx naming the field, and nothing written."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import pytest

from agentplane.auth import secrets
from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.conftest import make_settings, make_tenant

TABLES = (
    "tenants",
    "users",
    "memberships",
    "api_keys",
    "projects",
    "login_sessions",
    "invitations",
    "audit_logs",
)
GOOD = "correct horse battery"


@pytest.fixture(scope="module")
def settings(pg_home, pg_port, database_name) -> Settings:
    # This module signs up over HTTP, which env=test leaves closed by default.
    return make_settings(pg_home, pg_port, database_name, registration="open")


async def counts(db: Database) -> dict[str, int]:
    out = {}
    async with db.admin_connection() as conn:
        for table in TABLES:
            cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
            out[table] = (await cur.fetchone())["n"]
    return out


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["status"] == status and body["type"].startswith("https://")
    return body


@pytest.fixture(scope="module")
async def existing(db: Database, app) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        r = await c.post(
            "/v1/auth/register",
            json={"email": "taken@example.com", "password": GOOD, "tenant_slug": "taken"},
        )
        assert r.status_code == 201
    return r.json()


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"email": "not-an-email", "password": GOOD}, 422, "email"),
        ({"email": "a@b", "password": GOOD}, 422, "email"),
        ({"email": "new@example.com", "password": "short"}, 422, "password"),
        ({"email": "new@example.com", "password": "aaaaaaaaaaaaaaaa"}, 422, "password"),
        ({"email": "new@example.com", "password": "x" * 300}, 422, "password"),
        ({"email": "new@example.com", "password": "New@Example.com"}, 422, "password"),
        ({"email": "new@example.com", "password": "Password1234"}, 422, "password"),
        (
            {"email": "new@example.com", "password": GOOD, "tenant_slug": "Bad Slug"},
            422,
            "tenant_slug",
        ),
        ({"email": "new@example.com", "password": GOOD, "role": "owner"}, 422, "role"),
        ({"email": "TAKEN@example.com", "password": GOOD}, 409, "email"),
        ({"email": "new@example.com", "password": GOOD, "tenant_slug": "taken"}, 409, "slug"),
        ({"password": GOOD}, 422, "email"),
    ],
)
async def test_register_rejects_bad_input(
    client: httpx.AsyncClient,
    db: Database,
    existing: dict[str, Any],
    body: dict[str, Any],
    status: int,
    field: str,
) -> None:
    before = await counts(db)
    r = await client.post("/v1/auth/register", json=body)
    detail = problem(r, status)
    assert field in detail["detail"] or field in str(detail.get("errors"))
    assert body["password"] not in r.text
    assert await counts(db) == before


async def test_malformed_and_oversized_json(client: httpx.AsyncClient, db: Database) -> None:
    ctx = await make_tenant(db)
    before = await counts(db)
    headers = {**ctx.headers, "content-type": "application/json"}
    r = await client.post("/v1/projects", headers=headers, content=b'{"name": "x", "slug": ')
    body = problem(r, 422)
    assert body["errors"][0]["field"] == "body"
    r = await client.post(
        "/v1/projects", headers=headers, content=b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    )
    problem(r, 413)

    async def chunks():
        for _ in range(40):
            yield b"x" * 65536

    r = await client.post("/v1/projects", headers=headers, content=chunks())
    problem(r, 413)
    r = await client.post("/v1/projects", headers=ctx.headers, json={"name": "x", "slug": "-x-"})
    assert "slug" in problem(r, 422)["detail"]
    r = await client.post(
        "/v1/projects", headers=ctx.headers, json={"name": "x", "slug": "ok", "extra": 1}
    )
    assert "extra" in problem(r, 422)["detail"]
    assert await counts(db) == before


async def test_duplicate_project_slug(client: httpx.AsyncClient, db: Database) -> None:
    ctx = await make_tenant(db)
    r = await client.post("/v1/projects", headers=ctx.headers, json={"name": "x", "slug": "dup"})
    assert r.status_code == 201
    before = await counts(db)
    r = await client.post("/v1/projects", headers=ctx.headers, json={"name": "y", "slug": "dup"})
    assert problem(r, 409)["detail"] == "slug already exists"
    assert await counts(db) == before


async def test_bad_credentials_are_401(
    client: httpx.AsyncClient, db: Database, settings, existing: dict[str, Any]
) -> None:
    ctx = await make_tenant(db)
    cases = {
        "no credential": {},
        "malformed jwt": {"Authorization": "Bearer not.a.jwt"},
        "wrong scheme": {"Authorization": f"Basic {ctx.api_key}"},
        "unknown key": {"Authorization": "Bearer ap_" + "x" * 43},
        "unknown x-api-key": {"X-API-Key": "ap_nope"},
    }
    key = secrets._derive(settings, b"jwt")
    now = int(time.time())
    claims = {
        "sub": existing["user_id"],
        "tid": existing["tenant_id"],
        "sid": str(uuid.uuid4()),
        "aud": "agentplane",
        "typ": "access",
    }
    cases["expired jwt"] = {
        "Authorization": "Bearer "
        + jwt.encode({**claims, "iat": now - 3600, "exp": now - 60}, key, algorithm="HS256")
    }
    cases["jwt signed with another key"] = {
        "Authorization": "Bearer "
        + jwt.encode({**claims, "iat": now, "exp": now + 60}, b"k" * 32, algorithm="HS256")
    }
    cases["jwt of unknown session"] = {
        "Authorization": "Bearer "
        + jwt.encode({**claims, "iat": now, "exp": now + 60}, key, algorithm="HS256")
    }
    cases["alg none"] = {
        "Authorization": "Bearer "
        + jwt.encode({**claims, "iat": now, "exp": now + 60}, None, algorithm="none")
    }
    for name, headers in cases.items():
        r = await client.get("/me", headers=headers)
        body = problem(r, 401)
        assert "WWW-Authenticate" in r.headers, name
        for value in headers.values():
            assert value.split()[-1] not in r.text, name
    r = await client.get("/me", headers=cases["expired jwt"])
    assert r.json()["detail"] == "access token expired"

    # Revoked and expired keys.
    r = await client.post("/v1/api-keys", headers=ctx.headers, json={"name": "old"})
    old = r.json()
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 s' WHERE id = %s", [old["id"]]
        )
    problem(await client.get("/me", headers={"Authorization": f"Bearer {old['key']}"}), 401)
    await client.delete(f"/v1/api-keys/{ctx.api_key_id}", headers=ctx.headers)
    body = problem(await client.get("/me", headers=ctx.headers), 401)
    assert body["detail"] == "invalid, revoked or expired API key"


async def test_forbidden_unknown_and_invalid_ids(client: httpx.AsyncClient, db: Database) -> None:
    viewer = await make_tenant(db, role="viewer")
    owner = await make_tenant(db)
    before = await counts(db)
    r = await client.post("/v1/projects", headers=viewer.headers, json={"name": "x", "slug": "x"})
    assert "projects:write" in problem(r, 403)["detail"]
    r = await client.post(
        "/v1/invitations", headers=viewer.headers, json={"email": "x@example.com"}
    )
    assert "role" in problem(r, 403)["detail"]
    r = await client.post(
        "/v1/api-keys", headers=owner.headers, json={"name": "k", "scopes": ["nope:nothing"]}
    )
    assert "scopes" in problem(r, 422)["detail"]
    r = await client.post(
        "/v1/api-keys",
        headers=owner.headers,
        json={"name": "k", "expires_at": "2000-01-01T00:00:00Z"},
    )
    assert "expires_at" in problem(r, 422)["detail"]
    r = await client.post(
        "/v1/api-keys", headers=owner.headers, json={"name": "k", "user_id": str(uuid.uuid4())}
    )
    problem(r, 404)
    for path in ("/v1/projects/{}", "/v1/members/{}", "/v1/api-keys/{}", "/v1/tenants/{}"):
        problem(await client.get(path.format(uuid.uuid4()), headers=owner.headers), 404)
        r = await client.get(path.format("not-a-uuid"), headers=owner.headers)
        assert "_id" in problem(r, 422)["detail"]
    r = await client.get("/v1/audit-log", headers=owner.headers, params={"cursor": "@@@"})
    assert "cursor" in problem(r, 422)["detail"]
    r = await client.get("/v1/audit-log", headers=owner.headers, params={"limit": 0})
    assert "limit" in problem(r, 422)["detail"]
    r = await client.post(
        "/v1/auth/register",
        json={"email": "inv@example.com", "password": GOOD, "invitation": "inv_x"},
    )
    problem(r, 404)
    r = await client.post("/v1/auth/refresh", json={"refresh_token": "rt_forged"})
    problem(r, 401)
    assert await counts(db) == before
