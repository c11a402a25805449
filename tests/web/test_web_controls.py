"""Acting on a run from its page: pause and resume, cancel, and an input request
answered in place (an answer that does not fit its schema is shown beside the form,
and the run waits on)."""

from __future__ import annotations

import asyncio
import re
from types import SimpleNamespace

import httpx
import pytest

from agentplane.auth import keys
from agentplane.auth.models import ApiKeyIn
from tests.runtime.helpers import settle, worker
from tests.web.helpers import browser, person, sign_in

SCHEMA = {"type": "object", "required": ["approved"],
          "properties": {"approved": {"type": "boolean"}}}


@pytest.fixture(scope="module")
async def owner(db, app):
    """An owner with a password and a key, an agent that asks people, and two workflows."""
    who = await person(db)
    _, key = await keys.create_key(
        db, who.tenant_id, ApiKeyIn(name="t", scopes=sorted(
            {"agents:write", "agents:read", "agents:execute", "workflows:write",
             "workflows:read", "runs:read", "runs:write"}), rate_limit_per_hour=1_000_000,
            user_id=who.user_id), actor=None)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver", headers=headers) as api:
        for body in ({"id": "asker", "name": "Asker", "role": "asks", "tools": ["ask_human"],
                      "metadata": {"input_schema": SCHEMA}},
                     {"id": "plain", "name": "Plain", "role": "works"}):
            assert (await api.post("/v1/agents", json=body)).status_code == 201
        for name, slug in (("ask", "asker"), ("chain", "plain")):
            tasks = {"first": {"agent": slug, "instruction": "Do it."}}
            if name == "chain":
                tasks["second"] = {"agent": slug, "instruction": "Then this.",
                                   "depends_on": ["first"]}
            r = await api.post("/v1/workflows", json={"definition": {"name": name,
                                                                      "tasks": tasks}})
            assert r.status_code == 201, r.text
    return who, headers


async def start(c: httpx.AsyncClient, token: str, workflow: str) -> str:
    r = await c.post(f"/workflows/{workflow}/runs", data={"csrf": token})
    assert r.status_code == 303, r.text
    return re.search(r"/runs/([0-9a-f-]{36})", r.headers["location"]).group(1)


async def test_pause_resume_and_cancel_from_the_run_page(app, db, settings, owner) -> None:
    who, headers = owner
    async with browser(app) as c:
        token = await sign_in(c, who)
        run_id = await start(c, token, "chain")
        page = await c.get(f"/runs/{run_id}")
        assert f'action="/runs/{run_id}/pause"' in page.text
        assert f'action="/runs/{run_id}/cancel"' in page.text
        r = await c.post(f"/runs/{run_id}/pause", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"].endswith("?notice=paused")
        page = await c.get(r.headers["location"])
        assert 'id="run-status">paused<' in page.text and "The run is paused." in page.text
        assert f'action="/runs/{run_id}/resume"' in page.text
        async with worker(db, settings):
            await asyncio.sleep(0.3)
            assert 'id="run-status">paused<' in (await c.get(f"/runs/{run_id}")).text
            r = await c.post(f"/runs/{run_id}/resume", data={"csrf": token})
            assert r.status_code == 303
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://testserver") as api:
                ctx = SimpleNamespace(headers=headers)
                done = await settle(api, ctx, run_id)
        assert done["status"] == "completed"
        again = await c.post(f"/runs/{run_id}/cancel", data={"csrf": token})
        assert again.status_code == 409 and "already completed" in again.text
        other = await start(c, token, "chain")
        r = await c.post(f"/runs/{other}/cancel", data={"csrf": token})
        assert r.status_code == 303
        assert 'id="run-status">cancelled<' in (await c.get(f"/runs/{other}")).text


async def test_an_input_request_is_answered_in_place(app, db, settings, owner) -> None:
    who, headers = owner
    async with browser(app) as c:
        token = await sign_in(c, who)
        run_id = await start(c, token, "ask")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://testserver") as api:
            ctx = SimpleNamespace(headers=headers)
            async with worker(db, settings):
                await settle(api, ctx, run_id, statuses={"paused", "failed"})
                page = await c.get(f"/runs/{run_id}")
                assert "Waiting for you" in page.text
                rid = re.search(r'action="/runs/[^/]+/input-requests/([0-9a-f-]+)/answer"',
                                page.text).group(1)
                bad = await c.post(f"/runs/{run_id}/input-requests/{rid}/answer",
                                   data={"csrf": token, "response": '{"approved": "yes"}'})
                assert bad.status_code == 422
                assert "does not match the schema" in bad.text and "boolean" in bad.text
                assert "{&#34;approved&#34;: &#34;yes&#34;}</textarea>" in bad.text
                ok = await c.post(f"/runs/{run_id}/input-requests/{rid}/answer",
                                  data={"csrf": token, "response": '{"approved": true}'})
                assert ok.status_code == 303 and ok.headers["location"].endswith("answered")
                run = await settle(api, ctx, run_id)
        assert run["status"] == "completed"
        page = await c.get(f"/runs/{run_id}")
        assert "Waiting for you" not in page.text and "approved" in page.text
