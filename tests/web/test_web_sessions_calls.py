"""Sessions a page at a time (a cursor, like runs), LLM calls filtered by the gateway's
endpoint and request id, and a gateway call's detail."""

from __future__ import annotations

import re
import uuid

import httpx

from agentplane.auth import keys as auth_keys
from agentplane.auth.models import ApiKeyIn
from agentplane.sessions import service as sessions
from agentplane.sessions.models import SessionCreate
from agentplane.web.catalogue import SESSIONS_PAGE
from tests.web.helpers import browser, person, sign_in

ROW = re.compile(r'data-session="([0-9a-f-]{36})"')
CALL = re.compile(r'data-call="([0-9a-f-]{36})"')
OLDER = re.compile(r'href="(/sessions\?cursor=[^"]+)"')


async def test_sessions_are_cursor_paged(app, db) -> None:
    owner = await person(db)
    made: list[list[uuid.UUID]] = [[], []]
    # Two transactions: five older sessions, then a page's worth made at one instant
    # (ties on created_at, which the cursor's id breaks).
    for batch, n in ((0, 5), (1, SESSIONS_PAGE)):
        async with db.tenant_connection(owner.tenant_id) as conn:
            for i in range(n):
                made[batch].append((await sessions.create(
                    conn, owner.user_id, SessionCreate(external_id=f"s-{batch}-{i}"))).id)
    async with browser(app) as c:
        await sign_in(c, owner)
        first = await c.get("/sessions")
        assert first.status_code == 200
        shown = ROW.findall(first.text)
        assert set(shown) == {str(m) for m in made[1]}, "newest first"
        second = await c.get(OLDER.search(first.text).group(1).replace("&amp;", "&"))
        rest = ROW.findall(second.text)
        assert set(rest) == {str(m) for m in made[0]}
        assert not OLDER.search(second.text)
        for bad in ("garbage", "x" * 5000):
            r = await c.get(f"/sessions?cursor={bad}")
            assert r.status_code == 422 and "not a page of this list" in r.text


async def test_llm_calls_by_endpoint_and_request_id_and_a_gateway_call(app, db) -> None:
    owner = await person(db)
    _, key = await auth_keys.create_key(
        db, owner.tenant_id, ApiKeyIn(name="gw", scopes=["llm:invoke"], user_id=owner.user_id,
                                      rate_limit_per_hour=1_000_000), actor=None)
    async with db.tenant_connection(owner.tenant_id) as conn:
        session = await sessions.create(conn, owner.user_id, SessionCreate(external_id="gw-chat"))
    request_id = f"web-{uuid.uuid4().hex[:12]}"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as api:
        r = await api.post("/v1/chat/completions", headers={
            "Authorization": f"Bearer {key}", "x-request-id": request_id,
            "x-agentplane-session": "gw-chat"},
            json={"model": "offline", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 200, r.text
        r = await api.post("/v1/embeddings", headers={"Authorization": f"Bearer {key}"},
                           json={"model": "offline", "input": "hello"})
        assert r.status_code == 200, r.text
    async with browser(app) as c:
        await sign_in(c, owner)
        everything = CALL.findall((await c.get("/llm-calls")).text)
        assert len(everything) == 2
        chat = CALL.findall((await c.get("/llm-calls?endpoint=chat.completions")).text)
        assert len(chat) == 1
        assert CALL.findall((await c.get(f"/llm-calls?request_id={request_id}")).text) == chat
        embedded = CALL.findall((await c.get("/llm-calls?endpoint=embeddings")).text)
        assert len(embedded) == 1 and embedded != chat
        assert not CALL.findall((await c.get("/llm-calls?request_id=nobody")).text)
        long = await c.get("/llm-calls?request_id=" + "r" * 150)  # the API allows 128
        assert long.status_code == 422 and "at most 128 characters" in long.text
        assert not CALL.findall(long.text)

        one = await c.get(f"/llm-calls/{chat[0]}")
        assert one.status_code == 200
        assert re.search(r'id="call-endpoint">chat.completions', one.text)
        assert f'id="call-request-id"><a href="/llm-calls?request_id={request_id}">' in one.text
        assert 'id="call-key"' in one.text
        assert f'href="/sessions/{session.id}"' in one.text


async def test_llm_calls_by_project_and_tag(app, db) -> None:
    owner = await person(db)
    _, key = await auth_keys.create_key(
        db, owner.tenant_id, ApiKeyIn(name="gw", scopes=["llm:invoke", "projects:write"],
                                      user_id=owner.user_id, rate_limit_per_hour=1_000_000),
        actor=None)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as api:
        r = await api.post("/v1/projects", headers=headers, json={"name": "Ads", "slug": "ads"})
        assert r.status_code == 201, r.text
        for extra in ({"x-agentplane-project": "ads", "x-agentplane-tags": "exp:b,team=ads"},
                      {}):
            r = await api.post("/v1/chat/completions", headers={**headers, **extra},
                               json={"model": "offline",
                                     "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
    async with browser(app) as c:
        await sign_in(c, owner)
        assert len(CALL.findall((await c.get("/llm-calls")).text)) == 2
        tagged = CALL.findall((await c.get("/llm-calls?tag=team%3Dads")).text)
        assert len(tagged) == 1
        assert CALL.findall((await c.get("/llm-calls?project=ads")).text) == tagged
        ghost = await c.get("/llm-calls?project=ghost")
        assert ghost.status_code == 422 and "no project of that id or slug" in ghost.text
        one = await c.get(f"/llm-calls/{tagged[0]}")
        assert 'id="call-tags"' in one.text and "exp:b" in one.text
