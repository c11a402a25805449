"""Every page and action of the dashboard with an id in its path, tried by the owner of
tenant A on tenant B's resources: a 404 page, and nothing of B changes. A page added
later fails here until its parameter is named below (tests/tenancy/test_isolation_routes.py
does this for the API)."""

from __future__ import annotations

import uuid

import httpx

from agentplane.tenancy import members
from agentplane.tenancy.users import NewUser
from tests.api.test_route_guards import all_routes
from tests.runtime.helpers import tenant
from tests.tenancy.test_isolation_routes import TABLES, b_holdings, snapshot
from tests.web.helpers import PASSWORD, Person, browser, person, sign_in

# The holding of B each parameter of a dashboard path names.
PARAMETERS = {
    "run_ref": "run_id", "task_ref": "task_id", "request_ref": "request_id",
    "call_ref": "call_id", "tool_ref": "tool_execution_id", "slug": "slug", "name": "ref",
}
# `ref` names a different resource on each page.
REFS = {
    "/keys/": "key_id", "/members/invitations/": "invitation_id", "/members/": "member_id",
    "/sessions/": "session_id", "/llm-calls/": "call_id", "/providers/": "provider",
    "/queue/jobs/": "job_id", "/queue/dead-letters/": "dead_letter_id",
    "/queue/schedules/": "schedule_id", "/messages/dead/": "delivery_id",
    "/messages/": "message_id",
}


def id_pages() -> list[tuple[str, str]]:
    return [(m, path) for m, path in all_routes(dashboard=True) if "{" in path]


def fill(path: str, holdings: dict) -> str:
    names = [p.split("}")[0] for p in path.split("{")[1:]]
    values = {}
    for name in names:
        if name == "part":
            values[name] = "tasks"
        elif name == "ref":
            key = next((v for prefix, v in REFS.items() if path.startswith(prefix)), None)
            assert key is not None, f"{path}: name the resource its ref is in REFS"
            values[name] = holdings[key]
        else:
            assert name in PARAMETERS, f"{path}: name the resource of {{{name}}} in PARAMETERS"
            values[name] = holdings[PARAMETERS[name]]
    return path.format(**values)


async def test_every_id_page_of_another_tenant_is_a_404(app, db, settings) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        b = await tenant(db)
        holdings = await b_holdings(api, db, settings, b)
        r = await api.get("/v1/sessions", headers=b.headers)
    holdings["session_id"] = next(s["id"] for s in r.json() if s["external_id"] == "iso-chat")
    holdings["provider"] = "iso-prov"
    member = NewUser(email=f"b-{uuid.uuid4().hex[:8]}@example.com", password=PASSWORD)
    holdings["member_id"], _ = await members.add_member(db, b.tenant_id, member, "developer")
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "INSERT INTO invitations (tenant_id, email, role, token_hash, expires_at)"
            " VALUES (%s, 'invited@example.com', 'viewer', %s, now() + interval '1 day')"
            " RETURNING id", [b.tenant_id, uuid.uuid4().bytes * 2])
        holdings["invitation_id"] = (await cur.fetchone())["id"]
    tables = (*TABLES, "memberships", "invitations")
    before = await snapshot(db, b.tenant_id, tables)
    pages = id_pages()
    assert len(pages) >= 25
    async with browser(app) as c:
        token = await sign_in(c, await person(db))
        for method, path in pages:
            url = fill(path, holdings)
            form = {"csrf": token, "role": "viewer", "answer": "true", "model": ""}
            r = await c.request(method, url, data=form if method == "POST" else None)
            assert r.status_code == 404, (method, url, r.status_code, r.text[:300])
            assert "404 · Not found" in r.text, (method, url)
            assert str(b.tenant_id) not in r.text
    assert await snapshot(db, b.tenant_id, tables) == before
    # And B's own member sees them: the ids above were real.
    b_member = Person(member.email, PASSWORD, b.tenant_id, holdings["member_id"], "", "developer")
    async with browser(app) as c:
        await sign_in(c, b_member)
        for path in ("/runs/{run_ref}", "/agents/{slug}", "/sessions/{ref}", "/llm-calls/{ref}",
                     "/runs/{run_ref}/tools/{tool_ref}", "/workflows/{name}"):
            assert (await c.get(fill(path, holdings))).status_code == 200, path
