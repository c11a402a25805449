"""Agents, sessions, LLM calls and providers, over a run that ran."""

from __future__ import annotations

import re

from agentplane.sessions import service as sessions
from agentplane.sessions.models import SessionCreate
from tests.web.helpers import browser, person, sign_in


async def test_agents_and_an_agent(app, ran) -> None:
    t, run = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        r = await c.get("/agents")
        assert r.status_code == 200
        for slug in ("reader", "checker", "decider"):
            assert f'href="/agents/{slug}"' in r.text
        one = await c.get("/agents/checker")
        assert one.status_code == 200
        assert "offline/offline-1" in one.text and "defined over the API" in one.text
        assert one.text.count('<svg class="chart spark"') == 4  # 30 days of metrics
        assert run["id"][:8] in one.text  # its runs
        assert (await c.get("/agents/nobody")).status_code == 404


async def test_sessions_list_and_one(app, db, ran) -> None:
    t, _ = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        async with db.tenant_connection(t.owner.tenant_id) as conn:
            made_id = (await sessions.create(conn, t.owner.user_id,
                                             SessionCreate(external_id="chat-1"))).id
        r = await c.get("/sessions")
        assert r.status_code == 200 and f'href="/sessions/{made_id}"' in r.text
        one = await c.get(f"/sessions/{made_id}")
        assert one.status_code == 200 and "chat-1" in one.text


async def test_llm_calls_filter_and_open_with_messages(app, db, ran) -> None:
    t, run = ran
    async with browser(app) as c:
        await sign_in(c, t.owner)
        r = await c.get("/llm-calls")
        assert r.status_code == 200
        ids = re.findall(r'data-call="([0-9a-f-]+)"', r.text)
        assert len(ids) >= 3
        assert len(re.findall(r'data-call=', (await c.get(
            f"/llm-calls?run={run['id']}&status=completed&provider=offline")).text)) == len(ids)
        assert 'data-call=' not in (await c.get("/llm-calls?model=gpt-9")).text
        bad = await c.get("/llm-calls?session=zzz&status=weird")
        assert bad.status_code == 422 and "not an id" in bad.text
        assert "not a call status" in bad.text
        one = await c.get(f"/llm-calls/{ids[0]}")
        assert one.status_code == 200 and 'class="msg user"' in one.text
        assert 'class="msg assistant"' in one.text
    stranger = await person(db)
    async with browser(app) as c:
        await sign_in(c, stranger)
        assert (await c.get(f"/llm-calls/{ids[0]}")).status_code == 404
        assert 'data-call=' not in (await c.get("/llm-calls")).text


async def test_providers_and_a_test_call(app, ran) -> None:
    t, _ = ran
    async with browser(app) as c:
        token = await sign_in(c, t.owner)
        r = await c.get("/providers")
        assert r.status_code == 200 and "<strong>offline</strong>" in r.text
        assert "Models and prices" in r.text
        tested = await c.post("/providers/offline/test", data={"csrf": token})
        assert tested.status_code == 200 and "offline answered in" in tested.text
        missing = await c.post("/providers/nowhere/test", data={"csrf": token})
        assert missing.status_code == 404
