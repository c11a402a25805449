"""Sign-in, tokens, /me, API keys, roles and scopes of members, and the audit log over HTTP."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import httpx
import pytest

from agentplane.app import create_app
from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.conftest import make_settings, make_tenant
from tests.support.dates import clear_of

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def settings(pg_home, pg_port, database_name) -> Settings:
    # This module signs up over HTTP, which env=test leaves closed by default.
    return make_settings(pg_home, pg_port, database_name, registration="open")


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
    assert r.status_code == 200 and r.json()["revoked"] == 1  # the one session left open
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
    assert created["scopes"] == [
        "agents:execute", "agents:read", "events:read", "runs:read", "runs:write",
        "usage:read", "workflows:read", "workflows:write",
    ]
    me = (await client.get("/me", headers=bearer(key))).json()
    assert me["api_key_id"] == created["id"]
    assert set(me["scopes"]) == set(created["scopes"])
    # A key with the default scopes starts a run and reads what it started.
    run = await client.post("/v1/runs", headers=bearer(key), json={"query": "hi"})
    assert run.status_code == 201, run.text
    for path in (f"/v1/runs/{run.json()['id']}", f"/v1/runs/{run.json()['id']}/events",
                 "/v1/agents", "/v1/usage/summary"):
        assert (await client.get(path, headers=bearer(key))).status_code == 200, path
    assert (await client.get("/v1/api-keys", headers=bearer(key))).status_code == 403

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
    await clear_of(db, "hour")  # limits count in hourly windows
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


async def test_audit_trail_of_a_tenants_life(client: httpx.AsyncClient, db: Database) -> None:
    """Each identity change leaves its entry, with actor, origin and old/new values; the
    log filters by user, resource and time; login sessions keep only token digests."""
    ua = {"User-Agent": "audit-probe/1.0"}
    r = await client.post(
        "/v1/auth/register",
        json={"email": "life@example.com", "password": PASSWORD, "tenant_slug": "life"},
        headers=ua,
    )
    owner = r.json()
    auth = {**bearer(owner["access_token"]), **ua}
    r = await client.post(
        "/v1/auth/refresh", json={"refresh_token": owner["refresh_token"]}, headers=ua
    )
    assert r.status_code == 200
    auth = {**bearer(r.json()["access_token"]), **ua}
    r = await client.post(
        "/v1/invitations", headers=auth, json={"email": "joiner@example.com", "role": "viewer"}
    )
    joined = await register(client, "joiner@example.com", invitation=r.json()["token"])
    joiner = joined["user_id"]
    r = await client.patch(f"/v1/members/{joiner}", headers=auth, json={"role": "developer"})
    assert r.status_code == 200
    assert (await client.delete(f"/v1/members/{joiner}", headers=auth)).status_code == 204
    r = await client.patch(
        f"/v1/tenants/{owner['tenant_id']}", headers=auth, json={"name": "Life Inc"}
    )
    assert r.status_code == 200
    r = await client.post("/v1/auth/login", json={"email": "life@example.com", "password": "no"})
    assert r.status_code == 401
    r = await client.post(
        "/v1/auth/login", json={"email": "life@example.com", "password": PASSWORD}, headers=ua
    )
    later = {**bearer(r.json()["access_token"]), **ua}
    assert (await client.post("/v1/auth/logout", headers=auth)).status_code == 204

    page = await audit_events(client, later, limit=500)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for entry in page["items"]:
        by_type.setdefault(entry["event_type"], []).append(entry)
    wanted = {"tenant_created", "login", "login_failed", "token_refreshed", "logout",
              "member_invited", "member_joined", "permission_changed", "member_removed",
              "tenant_updated"}
    assert wanted <= set(by_type), sorted(by_type)
    for kind in wanted - {"login_failed", "member_joined"}:
        entry = by_type[kind][0]
        assert entry["user_id"] == owner["user_id"], kind  # the actor
        assert entry["user_agent"] == "audit-probe/1.0", kind
        assert entry["ip_address"] == "127.0.0.1", kind
    assert by_type["tenant_updated"][0]["new_values"]["name"] == "Life Inc"
    assert by_type["member_removed"][0]["resource_id"] == joiner
    assert PASSWORD not in str(page) and owner["refresh_token"] not in str(page)

    # Filters: by actor, by resource, by time.
    mine = await audit_events(client, later, user_id=owner["user_id"], limit=500)
    assert mine["items"] and all(e["user_id"] == owner["user_id"] for e in mine["items"])
    assert len(mine["items"]) < len(page["items"])  # the joiner's own entries are not there
    about = await audit_events(client, later, resource_type="membership", resource_id=joiner)
    assert {e["event_type"] for e in about["items"]} >= {"permission_changed", "member_removed"}
    assert all(e["resource_id"] == joiner for e in about["items"])
    middle = by_type["permission_changed"][0]["created_at"]
    after = await audit_events(client, later, since=middle, limit=500)
    before = await audit_events(client, later, until=middle, limit=500)
    assert all(e["created_at"] >= middle for e in after["items"])
    assert all(e["created_at"] < middle for e in before["items"])  # until is exclusive
    assert "logout" in {e["event_type"] for e in after["items"]}
    assert "tenant_created" in {e["event_type"] for e in before["items"]}
    assert len(after["items"]) + len(before["items"]) == len(page["items"])

    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT token_hash, ip_address::text AS ip, user_agent, revoked_at, rotated_at"
            " FROM login_sessions WHERE user_id = %s ORDER BY created_at",
            [owner["user_id"]],
        )
        sessions = await cur.fetchall()
        cur = await conn.execute(
            "SELECT password_hash FROM users WHERE id = %s", [owner["user_id"]]
        )
        assert (await cur.fetchone())["password_hash"].startswith("$argon2id$")
    assert len(sessions) == 3  # registered, refreshed (rotated), signed in again
    assert all(len(s["token_hash"]) == 32 for s in sessions)
    assert {s["ip"] for s in sessions} == {"127.0.0.1/32"}
    assert sessions[0]["rotated_at"] is not None and sessions[1]["revoked_at"] is not None
    assert sessions[2]["revoked_at"] is None and sessions[2]["user_agent"] == "audit-probe/1.0"


async def test_extra_permissions_and_soft_deleted_users(
    client: httpx.AsyncClient, db: Database
) -> None:
    from agentplane.auth import keys as auth_keys
    from agentplane.auth import scopes as sc
    from agentplane.auth.models import ApiKeyIn

    dev = await make_tenant(db, role="developer")
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT user_id FROM memberships WHERE tenant_id = %s AND role = 'owner'",
            [dev.tenant_id],
        )
        owner_id = (await cur.fetchone())["user_id"]
        # A key's scope beyond what its owner's membership grants gives nothing.
        await conn.execute(
            "UPDATE api_keys SET scopes = scopes || '{audit:read}' WHERE id = %s",
            [dev.api_key_id],
        )
    assert (await client.get("/v1/audit-log", headers=dev.headers)).status_code == 403

    async def owner_key(scopes: list[str]) -> dict[str, str]:
        _, key = await auth_keys.create_key(
            db, dev.tenant_id, ApiKeyIn(name="o", scopes=scopes, user_id=owner_id), actor=None
        )
        return bearer(key)

    narrow = await owner_key(["members:manage"])
    grant = {"permissions": ["audit:read"]}
    r = await client.patch(f"/v1/members/{dev.user_id}", headers=narrow, json=grant)
    assert r.status_code == 403 and "permissions you do not have" in r.json()["detail"]
    full = await owner_key(sorted(sc.granted("owner")))
    r = await client.patch(
        f"/v1/members/{dev.user_id}", headers=full, json={"permissions": ["nope:x"]}
    )
    assert r.status_code == 422
    r = await client.patch(f"/v1/members/{dev.user_id}", headers=full, json=grant)
    assert r.status_code == 200, r.text
    assert r.json()["permissions"] == ["audit:read"] and r.json()["role"] == "developer"
    me = (await client.get("/me", headers=dev.headers)).json()
    assert "audit:read" in me["scopes"] and "keys:manage" not in me["scopes"]
    assert (await client.get("/v1/audit-log", headers=dev.headers)).status_code == 200

    # A soft-deleted user's credentials stop working; the row stays.
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE users SET deleted_at = now() WHERE id = %s", [dev.user_id])
    for _ in range(200):  # a cached key learns of it by notification, within moments
        if (await client.get("/me", headers=dev.headers)).status_code == 401:
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("a soft-deleted user's key still works")
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM users WHERE id = %s", [dev.user_id])
        assert (await cur.fetchone())["n"] == 1
