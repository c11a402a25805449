"""Sessions (conversation contexts with a token budget) over HTTP and through the
service: create, look up by id or by the caller's external id, update, soft delete."""

from __future__ import annotations

import httpx

from agentplane.db.pool import Database
from tests.llm.helpers import row, tenant


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


async def test_an_external_session_id_is_unique_per_user(db: Database) -> None:
    from agentplane.errors import Conflict
    from agentplane.sessions import service
    from agentplane.sessions.models import SessionCreate
    from agentplane.tenancy import service as tenancy
    from agentplane.tenancy.service import NewUser

    t = await tenant(db)
    other, _ = await tenancy.add_member(
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
