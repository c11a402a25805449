"""Every route of the whole API checks who is calling: no credential is a 401, and a
viewer (every read scope) is refused every write with 403, before anything is read or
written. A route added later is covered here without being listed."""

from __future__ import annotations

import uuid

import httpx

from agentplane.app import create_app
from agentplane.db.pool import Database
from agentplane.gateway import api as gateway_api
from tests.conftest import make_tenant

# Open to anyone: liveness, readiness, metrics, the API's own description, the ways in.
PUBLIC = {
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/ready"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("POST", "/v1/auth/register"),
    ("POST", "/v1/auth/login"),
    ("POST", "/v1/auth/refresh"),
}
# Writes a viewer may make: to its own sign-in, not to the tenant's resources.
OWN_ACCOUNT = {
    ("POST", "/v1/auth/logout"),
    ("POST", "/v1/auth/logout-all"),
    ("POST", "/v1/auth/mfa/setup"),
    ("POST", "/v1/auth/mfa/enable"),
    ("POST", "/v1/auth/mfa/disable"),
}
# The gateway's routes answer in their vendor's shape (OpenAI's, Anthropic's), not in
# problem+json: the SDKs pointed at them read errors so.
VENDOR_SHAPED = {
    (m, r.path)
    for router in gateway_api.VENDOR_ROUTERS
    for r in router.routes
    for m in r.methods - {"HEAD"}
} - {("POST", "/v1/messages")}  # without anthropic-version: an agent message (problem+json)
TABLES = ("tenants", "memberships", "projects", "api_keys", "invitations", "audit_logs",
          "agents", "workflows", "runs", "jobs", "llm_providers", "sessions", "usage_alerts")


def all_routes(*, dashboard: bool = False) -> list[tuple[str, str]]:
    """The API's routes (/docs and /redoc among them); with `dashboard`, the dashboard's
    pages instead, which sign in with a session cookie (tests/web/test_web_guards.py)."""
    found = []
    for route in create_app().routes:
        router = getattr(route, "original_router", None)  # an included router
        for r in router.routes if router is not None else [route]:
            module = getattr(getattr(r, "endpoint", None), "__module__", "")
            page = module.startswith("agentplane.web") and module != "agentplane.web.docs"
            if page != dashboard:
                continue
            found += [(m, r.path) for m in sorted(getattr(r, "methods", None) or ()) if m != "HEAD"]
    return found


def url(path: str) -> str:
    """The path with every parameter filled by a fresh id (no such resource)."""
    parts = path.split("{")
    return parts[0] + "".join(str(uuid.uuid4()) + p.split("}", 1)[1] for p in parts[1:])


async def counts(db: Database) -> dict[str, int]:
    async with db.admin_connection() as conn:
        out = {}
        for table in TABLES:
            cur = await conn.execute(f"SELECT count(*) AS n FROM {table}")
            out[table] = (await cur.fetchone())["n"]
    return out


async def test_every_route_but_the_public_ones_needs_a_credential(
    client: httpx.AsyncClient, db: Database
) -> None:
    routes = all_routes()
    assert set(routes) >= PUBLIC
    before = await counts(db)
    guarded = [route for route in routes if route not in PUBLIC]
    assert len(guarded) >= 90
    for method, path in guarded:
        r = await client.request(method, url(path))
        assert r.status_code == 401, (method, path, r.status_code, r.text)
        if (method, path) in VENDOR_SHAPED:
            assert r.headers["content-type"] == "application/json", (method, path)
            assert r.json()["error"]["message"] == "authentication required", (method, path)
        else:
            assert r.headers["content-type"] == "application/problem+json", (method, path)
        assert r.headers["www-authenticate"].startswith("Bearer"), (method, path)
    assert await counts(db) == before


async def test_a_viewer_cannot_write_anywhere(client: httpx.AsyncClient, db: Database) -> None:
    viewer = await make_tenant(db, role="viewer")
    before = await counts(db)
    writes = [
        (method, path)
        for method, path in all_routes()
        if method in {"POST", "PUT", "PATCH", "DELETE"} and (method, path) not in PUBLIC
    ]
    assert len(writes) >= 50
    for method, path in writes:
        if (method, path) in OWN_ACCOUNT:
            continue
        r = await client.request(method, url(path), headers=viewer.headers)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        expected = "application/json" if (method, path) in VENDOR_SHAPED else (
            "application/problem+json")
        assert r.headers["content-type"] == expected, (method, path)
    assert await counts(db) == before
    # The same viewer reads: its key is good, the refusals above were about writing.
    for path in ("/v1/projects", "/v1/agents", "/v1/runs", "/v1/members"):
        assert (await client.get(path, headers=viewer.headers)).status_code == 200, path


async def test_only_owners_and_admins_manage_keys_and_members(
    client: httpx.AsyncClient, db: Database
) -> None:
    dev = await make_tenant(db, role="developer")
    before = await counts(db)
    managing = [
        (method, path)
        for method, path in all_routes()
        if path.startswith(("/v1/api-keys", "/v1/invitations"))
        or (path.startswith("/v1/members") and method != "GET")  # members are listed to all
    ]
    managing = [route for route in managing if not route[1].endswith("/budget")]
    assert len(managing) >= 9
    for method, path in managing:
        r = await client.request(method, url(path), headers=dev.headers)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
    assert await counts(db) == before
    admin = await make_tenant(db, role="admin")
    r = await client.post("/v1/api-keys", headers=admin.headers, json={"name": "by admin"})
    assert r.status_code == 201, r.text

