"""Sessions (conversation contexts with a token budget) over HTTP and through the
service: create, look up by id or by the caller's external id, update, soft delete,
list."""

from __future__ import annotations

import httpx

from agentplane.db.pool import Database
from tests.conftest import TenantContext
from tests.llm.helpers import row, tenant


async def member_key(db: Database, t: TenantContext, role: str = "developer") -> dict[str, str]:
    """A second member of t's tenant and the headers of an API key of theirs."""
    from agentplane.auth import keys as auth_keys
    from agentplane.auth import scopes as sc
    from agentplane.auth.models import ApiKeyIn
    from agentplane.tenancy import members
    from agentplane.tenancy.users import NewUser

    user_id, _ = await members.add_member(
        db, t.tenant_id, NewUser(email=f"{role}@{t.slug}.test"), role
    )
    _, key = await auth_keys.create_key(
        db,
        t.tenant_id,
        ApiKeyIn(name="member key", scopes=sorted(sc.granted(role)), user_id=user_id,
                 rate_limit_per_hour=1_000_000),
        actor=None,
    )
    return {"Authorization": f"Bearer {key}"}


async def test_sessions_crud_soft_delete_and_external_id(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await tenant(db)
    r = await client.post(
        "/v1/sessions",
        headers=t.headers,
        json={"external_id": "chat-42", "token_budget": 500, "context": {"topic": "x"}},
    )
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert r.json()["user_id"] == str(t.user_id)
    dup = await client.post("/v1/sessions", headers=t.headers, json={"external_id": "chat-42"})
    assert dup.status_code == 409
    by_ext = await client.get("/v1/sessions/chat-42", headers=t.headers)
    assert by_ext.json()["id"] == sid
    r = await client.patch(f"/v1/sessions/{sid}", headers=t.headers, json={"token_budget": 900})
    assert r.json()["token_budget"] == 900
    neg = await client.patch(f"/v1/sessions/{sid}", headers=t.headers, json={"token_budget": -5})
    assert neg.status_code == 422
    neg = await client.post("/v1/sessions", headers=t.headers, json={"token_budget": -1})
    assert neg.status_code == 422
    assert (await client.delete("/v1/sessions/chat-42", headers=t.headers)).status_code == 204
    assert (await client.get(f"/v1/sessions/{sid}", headers=t.headers)).status_code == 404
    deleted = (await client.get("/v1/sessions?include_deleted=true", headers=t.headers)).json()
    gone = next(s for s in deleted if s["id"] == sid)
    assert gone["deleted_at"] and gone["deleted_by"] == str(t.user_id)
    again = await client.post("/v1/sessions", headers=t.headers, json={"external_id": "chat-42"})
    assert again.status_code == 201, "a deleted session's external id is free again"
    n = await row(db, "SELECT count(*) AS n FROM sessions WHERE tenant_id = %s", t.tenant_id)
    assert n["n"] == 2


async def test_lookup_by_external_id_is_the_callers_own(
    client: httpx.AsyncClient, db: Database
) -> None:
    """An external id names the caller's own session; the id names it for anyone of the
    tenant."""
    t = await tenant(db)
    other = await member_key(db, t)
    r = await client.post("/v1/sessions", headers=t.headers, json={"external_id": "mine"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    assert (await client.get("/v1/sessions/mine", headers=other)).status_code == 404
    assert (await client.get(f"/v1/sessions/{sid}", headers=other)).json()["id"] == sid
    r = await client.post("/v1/sessions", headers=other, json={"external_id": "mine"})
    assert r.status_code == 201, "the same external id is free for another member"
    theirs = r.json()["id"]
    assert (await client.get("/v1/sessions/mine", headers=other)).json()["id"] == theirs
    assert (await client.get("/v1/sessions/mine", headers=t.headers)).json()["id"] == sid


async def test_updates_listing_and_what_a_deleted_session_refuses(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await tenant(db)
    made = []
    for n in range(3):
        r = await client.post("/v1/sessions", headers=t.headers, json={"token_budget": n})
        assert r.status_code == 201, r.text
        made.append(r.json())
    listed = (await client.get("/v1/sessions", headers=t.headers)).json()
    assert [s["id"] for s in listed] == [s["id"] for s in reversed(made)]  # newest first
    first = (await client.get("/v1/sessions", headers=t.headers, params={"limit": 1})).json()
    assert [s["id"] for s in first] == [made[-1]["id"]]
    for limit in (0, 501):
        r = await client.get("/v1/sessions", headers=t.headers, params={"limit": limit})
        assert r.status_code == 422, r.text

    sid = made[0]["id"]
    same = await client.patch(f"/v1/sessions/{sid}", headers=t.headers, json={})
    assert same.status_code == 200 and same.json()["updated_at"] == made[0]["updated_at"]
    r = await client.patch(f"/v1/sessions/{sid}", headers=t.headers, json={"tokens_used": 0})
    assert r.status_code == 422, "what the budget counts is not the caller's to set"
    r = await client.patch(
        f"/v1/sessions/{sid}", headers=t.headers, json={"context": {"step": 2}}
    )
    assert r.status_code == 200 and r.json()["context"] == {"step": 2}

    assert (await client.delete(f"/v1/sessions/{sid}", headers=t.headers)).status_code == 204
    for method, body in (("PATCH", {"token_budget": 1}), ("DELETE", None), ("GET", None)):
        r = await client.request(method, f"/v1/sessions/{sid}", headers=t.headers, json=body)
        assert r.status_code == 404, (method, r.text)
    listed = (await client.get("/v1/sessions", headers=t.headers)).json()
    assert [s["id"] for s in listed] == [made[2]["id"], made[1]["id"]]
    kept = await row(db, "SELECT token_budget, context FROM sessions WHERE id = %s", sid)
    assert kept == {"token_budget": 0, "context": {"step": 2}}, "a deleted session keeps its row"


async def test_an_external_session_id_is_unique_per_user(db: Database) -> None:
    from agentplane.errors import Conflict
    from agentplane.sessions import service
    from agentplane.sessions.models import SessionCreate
    from agentplane.tenancy import members
    from agentplane.tenancy.users import NewUser

    t = await tenant(db)
    other, _ = await members.add_member(
        db, t.tenant_id, NewUser(email=f"member@{t.slug}.test"), "developer"
    )
    async with db.tenant_connection(t.tenant_id) as conn:
        mine = await service.create(conn, t.user_id, SessionCreate(external_id="chat"))
        theirs = await service.create(conn, other, SessionCreate(external_id="chat"))
        assert (await service.get(conn, "chat", t.user_id)).id == mine.id
        assert (await service.get(conn, "chat", other)).id == theirs.id
    try:
        async with db.tenant_connection(t.tenant_id) as conn:
            await service.create(conn, other, SessionCreate(external_id="chat"))
        raise AssertionError("a second live session with the same external id")
    except Conflict as exc:
        assert "external_id chat is already used" in exc.detail
    n = await row(db, "SELECT count(*) AS n FROM sessions WHERE tenant_id = %s", t.tenant_id)
    assert n["n"] == 2
