"""Fixtures of the dashboard's tests."""

from __future__ import annotations

from types import SimpleNamespace

import httpx
import pytest

from tests.runtime.helpers import settle, worker
from tests.web.helpers import team


@pytest.fixture(scope="module")
async def ran(db, settings, app):
    """A team, and one run of its workflow, completed by a worker in this process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as api:
        t = await team(db, api)
        async with worker(db, settings):
            r = await api.post("/v1/runs", headers=t.headers, json={
                "workflow": "review", "inputs": {"change": "-a\n+b"}})
            assert r.status_code == 201, r.text
            run = await settle(api, SimpleNamespace(headers=t.headers), r.json()["id"])
        assert run["status"] == "completed", run
    return t, run


