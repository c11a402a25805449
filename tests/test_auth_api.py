"""Sign-in, tokens, /me, API keys, members, projects and the audit log over HTTP."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import pytest

from agentplane.api.app import create_app
from agentplane.db.pool import Database
from tests.conftest import make_tenant

PASSWORD = "correct horse battery"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def register(client: httpx.AsyncClient, email: str, **extra: Any) -> dict[str, Any]:
    r = await client.post("/v1/auth/register", json={"email": email, "password": PASSWORD, **extra})
    assert r.status_code == 201, r.text
    return r.json()


async def audit_events(client: httpx.AsyncClient, headers: dict[str, str], **params: Any):
    r = await client.get("/v1/audit-log", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


async def test_me_with_api_key(client: httpx.AsyncClient, db: Database) -> None:
    ctx = await make_tenant(db)
    r = await client.get("/me", headers=ctx.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["tenant_id"] == str(ctx.tenant_id)
    assert body["user_id"] == str(ctx.user_id)
    assert body["api_key_id"] == str(ctx.api_key_id)
    assert body["role"] == "owner"
    assert "keys:manage" in body["scopes"]
    assert r.headers["RateLimit-Limit"] == "1000000"
    r = await client.get("/me", headers={"X-API-Key": ctx.api_key})
    assert r.status_code == 200 and r.json()["tenant_id"] == str(ctx.tenant_id)


async def test_register_login_and_me_with_jwt(client: httpx.AsyncClient) -> None:
    tokens = await register(
        client, "Alice@Example.com", tenant_name="Alice Org", tenant_slug="alice-org"
    )
    r = await client.get("/me", headers=bearer(tokens["access_token"]))
    assert r.status_code == 200, r.text
    me = r.json()
    assert me["email"] == "alice@example.com"
    assert me["tenant_slug"] == "alice-org" and me["role"] == "owner"
    assert me["api_key_id"] is None

    r = await client.post(
        "/v1/auth/login", json={"email": "alice@example.com", "password": PASSWORD}
    )
    assert r.status_code == 200, r.text
    assert r.json()["tenant_id"] == tokens["tenant_id"]
    events = await audit_events(client, bearer(r.json()["access_token"]))
    kinds = [e["event_type"] for e in events["items"]]
    assert kinds.count("login") == 2 and "tenant_created" in kinds

    r = await client.post(
        "/v1/auth/login", json={"email": "alice@example.com", "password": "wrong password!!"}
    )
    assert r.status_code == 401
    assert r.json()["detail"] == "invalid email or password"


async def test_refresh_rotates_and_reuse_revokes_the_family(client: httpx.AsyncClient) -> None:
    first = await register(client, "rot@example.com")
    r = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert (await client.get("/me", headers=bearer(second["access_token"]))).status_code == 200

    # The spent token again: someone else has it. The whole login session ends.
    r = await client.post("/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401
    r = await client.post("/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401
    assert (await client.get("/me", headers=bearer(second["access_token"]))).status_code == 401

    login = await client.post(
        "/v1/auth/login", json={"email": "rot@example.com", "password": PASSWORD}
    )
    events = await audit_events(
        client, bearer(login.json()["access_token"]), event_type="token_reuse_detected"
    )
    assert len(events["items"]) == 1


async def test_logout_and_logout_everywhere(client: httpx.AsyncClient) -> None:
    one = await register(client, "bye@example.com")
    r = await client.post("/v1/auth/login", json={"email": "bye@example.com", "password": PASSWORD})
    two = r.json()
    r = await client.post("/v1/auth/logout", headers=bearer(one["access_token"]))
    assert r.status_code == 204
    assert (await client.get("/me", headers=bearer(one["access_token"]))).status_code == 401
    r = await client.post("/v1/auth/refresh", json={"refresh_token": one["refresh_token"]})
    assert r.status_code == 401
    assert (await client.get("/me", headers=bearer(two["access_token"]))).status_code == 200

    r = await client.post("/v1/auth/logout-all", headers=bearer(two["access_token"]))
    assert r.status_code == 200 and r.json()["revoked"] >= 1
    assert (await client.get("/me", headers=bearer(two["access_token"]))).status_code == 401


async def test_api_keys_create_list_revoke(
    client: httpx.AsyncClient, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    owner = await make_tenant(db)
    r = await client.post("/v1/api-keys", headers=owner.headers, json={"name": "ci"})
    assert r.status_code == 201, r.text
    created = r.json()
    key = created["key"]
    assert key.startswith("ap_") and created["key_prefix"] == key[:8]
    assert created["scopes"] == ["agents:execute", "workflows:read", "workflows:write"]
    me = (await client.get("/me", headers=bearer(key))).json()
    assert me["api_key_id"] == created["id"]
    assert set(me["scopes"]) == set(created["scopes"])

    r = await client.get("/v1/api-keys", headers=owner.headers)
    listed = {k["id"]: k for k in r.json()}
    assert created["id"] in listed and "key" not in listed[created["id"]]
    assert key not in r.text
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT key_hash FROM api_keys WHERE id = %s", [created["id"]])
        stored = (await cur.fetchone())["key_hash"]
    assert len(stored) == 32 and key.encode() not in stored

    r = await client.delete(f"/v1/api-keys/{created['id']}", headers=owner.headers)
    assert r.status_code == 200 and r.json()["is_active"] is False
    r = await client.get("/me", headers=bearer(key))
    assert r.status_code == 401
    assert key not in r.text
    assert all(key not in rec.getMessage() for rec in caplog.records)
    kinds = [e["event_type"] for e in (await audit_events(client, owner.headers))["items"]]
    assert "api_key_created" in kinds and "api_key_revoked" in kinds


async def test_roles_and_scopes_are_enforced(client: httpx.AsyncClient, db: Database) -> None:
    viewer = await make_tenant(db, role="viewer")
    r = await client.post("/v1/projects", headers=viewer.headers, json={"name": "x", "slug": "x"})
    assert r.status_code == 403 and "projects:write" in r.json()["detail"]
    assert (await client.get("/v1/projects", headers=viewer.headers)).status_code == 200

    dev = await make_tenant(db, role="developer")
    r = await client.post("/v1/api-keys", headers=dev.headers, json={"name": "mine"})
    assert r.status_code == 403
    r = await client.get("/v1/members", headers=dev.headers)
    assert r.status_code == 200
    r = await client.patch(
        f"/v1/members/{dev.user_id}", headers=dev.headers, json={"role": "admin"}
    )
    assert r.status_code == 403

    # A key with fewer scopes than its owner can do less.
    narrow = await make_tenant(db, scopes=["workflows:read"])
    r = await client.get("/v1/projects", headers=narrow.headers)
    assert r.status_code == 403 and r.json()["missing_scopes"] == ["projects:read"]


async def test_a_key_never_grants_more_than_its_owner(
    client: httpx.AsyncClient, db: Database
) -> None:
    owner = await make_tenant(db)
    r = await client.post(
        "/v1/invitations",
        headers=owner.headers,
        json={"email": "dev@keys.test", "role": "developer"},
    )
    invitation = r.json()["token"]
    joined = await register(client, "dev@keys.test", invitation=invitation)
    assert joined["tenant_id"] == str(owner.tenant_id)
    dev_id = joined["user_id"]

    r = await client.post(
        "/v1/api-keys",
        headers=owner.headers,
        json={"name": "dev", "user_id": dev_id, "scopes": ["keys:manage"]},
    )
    assert r.status_code == 403
    r = await client.post(
        "/v1/api-keys",
        headers=owner.headers,
        json={"name": "dev", "user_id": dev_id, "scopes": ["projects:read", "projects:write"]},
    )
    assert r.status_code == 201, r.text
    dev_key = bearer(r.json()["key"])
    assert (
        await client.post("/v1/projects", headers=dev_key, json={"name": "A", "slug": "a"})
    ).status_code == 201

    r = await client.patch(f"/v1/members/{dev_id}", headers=owner.headers, json={"role": "viewer"})
    assert r.status_code == 200 and r.json()["role"] == "viewer"
    me = (await client.get("/me", headers=dev_key)).json()
    assert me["scopes"] == ["projects:read"] and me["role"] == "viewer"
    assert (
        await client.post("/v1/projects", headers=dev_key, json={"name": "B", "slug": "b"})
    ).status_code == 403
    events = await audit_events(client, owner.headers, event_type="permission_changed")
    assert events["items"][0]["old_values"]["role"] == "developer"
    assert events["items"][0]["new_values"]["role"] == "viewer"

    # Removing the member takes their keys with them.
    assert (await client.delete(f"/v1/members/{dev_id}", headers=owner.headers)).status_code == 204
    assert (await client.get("/me", headers=dev_key)).status_code == 401


async def test_owners_rules(client: httpx.AsyncClient, db: Database) -> None:
    owner = await make_tenant(db)
    r = await client.patch(
        f"/v1/members/{owner.user_id}", headers=owner.headers, json={"role": "admin"}
    )
    assert r.status_code == 409  # the last owner stays
    r = await client.delete(f"/v1/members/{owner.user_id}", headers=owner.headers)
    assert r.status_code == 409
    admin = await make_tenant(db, role="admin")
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT user_id FROM memberships WHERE tenant_id = %s AND role = 'owner'",
            [admin.tenant_id],
        )
        owner_id = (await cur.fetchone())["user_id"]
    r = await client.patch(
        f"/v1/members/{owner_id}", headers=admin.headers, json={"role": "viewer"}
    )
    assert r.status_code == 403
    r = await client.patch(
        f"/v1/members/{admin.user_id}", headers=admin.headers, json={"role": "owner"}
    )
    assert r.status_code == 403


async def test_login_to_one_of_several_tenants(client: httpx.AsyncClient, db: Database) -> None:
    first = await register(client, "multi@example.com", tenant_slug="multi-one")
    r = await client.post(
        "/v1/invitations",
        headers=bearer(first["access_token"]),
        json={"email": "multi@example.com", "role": "viewer"},
    )
    assert r.status_code == 201
    # An existing account joins another tenant by proving its password.
    other = await make_tenant(db)
    r = await client.post(
        "/v1/invitations",
        headers=other.headers,
        json={"email": "multi@example.com", "role": "viewer"},
    )
    joined = await register(client, "multi@example.com", invitation=r.json()["token"])
    assert joined["tenant_id"] == str(other.tenant_id)
    r = await client.post(
        "/v1/auth/login", json={"email": "multi@example.com", "password": PASSWORD}
    )
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "tenant"
    r = await client.post(
        "/v1/auth/login",
        json={"email": "multi@example.com", "password": PASSWORD, "tenant": other.slug},
    )
    assert r.status_code == 200 and r.json()["tenant_id"] == str(other.tenant_id)


async def test_lockout_after_five_failures_reveals_nothing(
    client: httpx.AsyncClient, db: Database
) -> None:
    tokens = await register(client, "locked@example.com")
    for email in ("locked@example.com", "nobody@example.com"):
        for _ in range(5):
            r = await client.post(
                "/v1/auth/login", json={"email": email, "password": "not the password"}
            )
            assert r.status_code == 401
        r = await client.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert r.status_code == 429
        assert int(r.headers["Retry-After"]) > 0
        assert r.json()["detail"] == "too many failed sign-ins for this account; try again later"
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM audit_logs WHERE tenant_id = %s"
            " AND event_type = 'login_failed'",
            [tokens["tenant_id"]],
        )
        assert (await cur.fetchone())["n"] == 5
        # Cooling off ends: the right password works again.
        await conn.execute("UPDATE login_failures SET locked_until = now() - interval '1 s'")
    r = await client.post(
        "/v1/auth/login", json={"email": "locked@example.com", "password": PASSWORD}
    )
    assert r.status_code == 200


async def test_rate_limits_per_key_and_per_tenant_across_processes(
    client: httpx.AsyncClient, db: Database, settings
) -> None:
    ctx = await make_tenant(db)
    r = await client.post(
        "/v1/api-keys", headers=ctx.headers, json={"name": "slow", "rate_limit_per_hour": 3}
    )
    slow = bearer(r.json()["key"])
    # A second app with its own pools stands for another server process.
    other_db = Database(settings, db.endpoints)
    await other_db.open()
    try:
        transport = httpx.ASGITransport(app=create_app(settings, db=other_db))
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as other:
            statuses = []
            for i in range(4):
                c = client if i % 2 == 0 else other
                r = await c.get("/me", headers=slow)
                statuses.append(r.status_code)
                if r.status_code == 200:
                    assert r.headers["RateLimit-Remaining"] == str(2 - i)
    finally:
        await other_db.close()
    assert statuses == [200, 200, 200, 429]
    assert r.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(r.headers["Retry-After"]) <= 3600
    assert r.headers["RateLimit-Limit"] == "3"
    assert r.headers["content-type"] == "application/problem+json"
    # Other keys of the tenant are not affected by that key's limit...
    assert (await client.get("/me", headers=ctx.headers)).status_code == 200
    # ...but the tenant's own limit covers every key and login session.
    r = await client.patch(
        f"/v1/tenants/{ctx.tenant_id}", headers=ctx.headers, json={"rate_limit_per_hour": 1}
    )
    assert r.status_code == 200
    r = await client.get("/me", headers=ctx.headers)
    assert r.status_code == 429 and r.headers["RateLimit-Limit"] == "1"


async def test_projects_crud_and_members(client: httpx.AsyncClient, db: Database) -> None:
    ctx = await make_tenant(db)
    r = await client.post(
        "/v1/projects",
        headers=ctx.headers,
        json={"name": "Web", "slug": "web", "description": "site"},
    )
    assert r.status_code == 201
    project = r.json()
    pid = project["id"]
    r = await client.patch(f"/v1/projects/{pid}", headers=ctx.headers, json={"archived": True})
    assert r.json()["archived"] is True
    assert (await client.get("/v1/projects", headers=ctx.headers)).json() == []
    r = await client.get("/v1/projects", headers=ctx.headers, params={"include_archived": True})
    assert [p["id"] for p in r.json()] == [pid]
    r = await client.put(
        f"/v1/projects/{pid}/members/{ctx.user_id}", headers=ctx.headers, json={"role": "admin"}
    )
    assert r.status_code == 200 and r.json()["role"] == "admin"
    r = await client.get(f"/v1/projects/{pid}/members", headers=ctx.headers)
    assert [m["user_id"] for m in r.json()] == [str(ctx.user_id)]
    r = await client.delete(f"/v1/projects/{pid}/members/{ctx.user_id}", headers=ctx.headers)
    assert r.status_code == 204
    assert (await client.delete(f"/v1/projects/{pid}", headers=ctx.headers)).status_code == 204
    assert (await client.get(f"/v1/projects/{pid}", headers=ctx.headers)).status_code == 404


async def test_audit_log_filters_and_cursor(client: httpx.AsyncClient, db: Database) -> None:
    ctx = await make_tenant(db)
    for i in range(5):
        r = await client.post(
            "/v1/projects", headers=ctx.headers, json={"name": f"P{i}", "slug": f"p{i}"}
        )
        assert r.status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"event_type": "project_created", "limit": 2}
        if cursor:
            params["cursor"] = cursor
        page = await audit_events(client, ctx.headers, **params)
        seen += [e["new_values"]["slug"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["p4", "p3", "p2", "p1", "p0"]
    page = await audit_events(client, ctx.headers, resource_type="tenant")
    assert [e["event_type"] for e in page["items"]] == ["tenant_created"]
    assert page["items"][0]["user_id"] is not None


async def test_deleted_tenant_stops_authenticating(client: httpx.AsyncClient, db: Database) -> None:
    ctx = await make_tenant(db)
    r = await client.delete(f"/v1/tenants/{uuid.uuid4()}", headers=ctx.headers)
    assert r.status_code == 404
    r = await client.delete(f"/v1/tenants/{ctx.tenant_id}", headers=ctx.headers)
    assert r.status_code == 204
    assert (await client.get("/me", headers=ctx.headers)).status_code == 401
