"""The event log over HTTP (history, Server-Sent Events with resume) and the CLI."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from uuid import uuid4

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.events import types as t
from agentplane.events.stream import close_hub, hub_for
from tests.conftest import TenantContext, cli_env, make_settings, make_tenant
from tests.events.helpers import SSE, emit, eventually, live_server, make_run, read_sse

KEEPALIVE = 0.3


@pytest.fixture(scope="module")
def settings(pg_home, pg_port, database_name) -> Settings:
    return make_settings(pg_home, pg_port, database_name, events_keepalive_seconds=KEEPALIVE)


@pytest.fixture(scope="module")
async def base_url(app, db: Database) -> AsyncIterator[str]:
    async with live_server(app) as url:
        yield url
    await close_hub(db)


@pytest.fixture(scope="module")
async def tenant(db: Database) -> TenantContext:
    return await make_tenant(db)


@pytest.fixture
async def http(base_url: str, tenant: TenantContext) -> AsyncIterator[httpx.AsyncClient]:
    timeout = httpx.Timeout(10.0)
    async with httpx.AsyncClient(base_url=base_url, headers=tenant.headers, timeout=timeout) as c:
        yield c


async def collect(http: httpx.AsyncClient, url: str, *, stop_after: int | None = None,
                  headers: dict[str, str] | None = None,
                  comments: list[str] | None = None) -> list[SSE]:
    """Events of a stream until it ends (or `stop_after` events, then disconnect)."""
    got: list[SSE] = []
    async with asyncio.timeout(10), http.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for event in read_sse(response, comments):
            got.append(event)
            if stop_after is not None and len(got) >= stop_after:
                break
    return got


# --- history ---------------------------------------------------------------------------


async def test_history_pages_and_filters(client: httpx.AsyncClient, db: Database,
                                         tenant: TenantContext) -> None:
    run = await make_run(db, tenant.tenant_id)
    await emit(db, tenant.tenant_id, run, t.RUN_STARTED, t.TASK_STARTED, t.TOOL_CALLED,
               t.TASK_COMPLETED, t.RUN_COMPLETED)
    url = f"/v1/runs/{run}/events"
    body = (await client.get(url, headers=tenant.headers, params={"limit": 2})).json()
    assert [e["seq"] for e in body["events"]] == [1, 2] and body["next_after"] == 2
    body = (await client.get(url, headers=tenant.headers, params={"after": 2})).json()
    assert [e["type"] for e in body["events"]] == [t.TOOL_CALLED, t.TASK_COMPLETED,
                                                   t.RUN_COMPLETED]
    body = (await client.get(url, headers=tenant.headers,
                             params=[("type", "task.*"), ("type", t.RUN_COMPLETED)])).json()
    assert [e["seq"] for e in body["events"]] == [2, 4, 5]
    body = (await client.get(url, headers=tenant.headers, params={"after": 5})).json()
    assert body == {"events": [], "next_after": None}


async def test_history_refuses_bad_input_and_other_tenants(
    client: httpx.AsyncClient, db: Database, tenant: TenantContext
) -> None:
    other = await make_tenant(db)
    theirs = await make_run(db, other.tenant_id)
    await emit(db, other.tenant_id, theirs, t.RUN_STARTED)
    for run in (theirs, uuid4()):
        for path in (f"/v1/runs/{run}/events", f"/v1/runs/{run}/events/stream"):
            response = await client.get(path, headers=tenant.headers)
            assert response.status_code == 404, path
            assert response.headers["content-type"] == "application/problem+json"
    run = await make_run(db, tenant.tenant_id)
    for params in ({"after": "-1"}, {"after": "x"}, {"limit": "0"}, {"type": "Bad Type"}):
        response = await client.get(f"/v1/runs/{run}/events", headers=tenant.headers,
                                    params=params)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
    assert (await client.get(f"/v1/runs/{run}/events")).status_code == 401
    blind = await make_tenant(db, scopes=["runs:read"])
    run_b = await make_run(db, blind.tenant_id)
    for path in (f"/v1/runs/{run_b}/events", f"/v1/runs/{run_b}/events/stream",
                 "/v1/events/stream"):
        response = await client.get(path, headers=blind.headers)
        assert response.status_code == 403, path
        assert response.json()["missing_scopes"] == ["events:read"]
    assert Settings.model_fields["events_keepalive_seconds"].default == 15, "the default"


# --- live streams ----------------------------------------------------------------------


async def test_stream_replays_then_follows_live_and_ends_after_the_terminal_event(
    http: httpx.AsyncClient, db: Database, tenant: TenantContext
) -> None:
    run = await make_run(db, tenant.tenant_id)
    await emit(db, tenant.tenant_id, run, t.RUN_STARTED, t.TASK_STARTED)
    comments: list[str] = []

    async def writer() -> None:
        await asyncio.sleep(KEEPALIVE * 2.5)  # quiet long enough for keep-alive comments
        await emit(db, tenant.tenant_id, run, t.TASK_COMPLETED)
        await emit(db, tenant.tenant_id, run, t.RUN_COMPLETED, t.MESSAGE_SENT)

    writing = asyncio.create_task(writer())
    got = await collect(http, f"/v1/runs/{run}/events/stream", comments=comments)
    await writing
    assert [(e.id, e.event) for e in got] == [
        ("1", t.RUN_STARTED), ("2", t.TASK_STARTED), ("3", t.TASK_COMPLETED),
        ("4", t.RUN_COMPLETED),
    ], "the stream ends after the terminal event"
    assert got[2].body["seq"] == 3 and got[2].body["run_id"] == str(run)
    assert comments.count("keep-alive") >= 2

    # Resuming at or after the terminal event ends at once, with nothing.
    assert await collect(http, f"/v1/runs/{run}/events/stream?after=4") == []
    # Last-Event-ID wins over ?after= (a reconnecting EventSource keeps its first URL).
    resumed = await collect(http, f"/v1/runs/{run}/events/stream?after=0",
                            headers={"Last-Event-ID": "2"})
    assert [e.id for e in resumed] == ["3", "4"]


async def test_malformed_last_event_id_is_422(http: httpx.AsyncClient, db: Database,
                                             tenant: TenantContext) -> None:
    run = await make_run(db, tenant.tenant_id)
    for bad in ("abc", "-1", "1.5", str(2**63)):
        response = await http.get(f"/v1/runs/{run}/events/stream",
                                  headers={"Last-Event-ID": bad})
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"
        assert "Last-Event-ID" in response.json()["detail"]
    response = await http.get(f"/v1/runs/{run}/events/stream", params={"after": "x"})
    assert response.status_code == 422
    # A cursor beyond the run's last event names no event this client saw: refused, where
    # the stream would otherwise skip every event up to it and never end.
    await emit(db, tenant.tenant_id, run, t.RUN_STARTED, t.TASK_STARTED)
    for headers, params in (({"Last-Event-ID": "3"}, {}), ({}, {"after": "99"})):
        response = await http.get(f"/v1/runs/{run}/events/stream", headers=headers,
                                  params=params)
        assert response.status_code == 422, (headers, params)
        assert "beyond the run's last event (2)" in response.json()["detail"]
    following = asyncio.create_task(collect(http, f"/v1/runs/{run}/events/stream",
                                            headers={"Last-Event-ID": "2"}))
    await asyncio.sleep(0.2)
    await emit(db, tenant.tenant_id, run, t.RUN_COMPLETED)
    assert [e.id for e in await following] == ["3"]


@hsettings(max_examples=40, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 12), min_size=1, max_size=3),
)
async def test_reconnecting_with_last_event_id_delivers_every_event_exactly_once(
    http: httpx.AsyncClient, db: Database, tenant: TenantContext,
    batches: list[int], cuts: list[int],
) -> None:
    """Events keep coming while the client drops at random points and resumes."""
    run = await make_run(db, tenant.tenant_id)
    total = sum(batches) + 1

    async def writer() -> None:
        for size in batches:
            await emit(db, tenant.tenant_id, run, *([t.AGENT_THINKING] * size))
            await asyncio.sleep(0.005)
        await emit(db, tenant.tenant_id, run, t.RUN_COMPLETED)

    writing = asyncio.create_task(writer())
    seen: list[SSE] = []
    url = f"/v1/runs/{run}/events/stream"
    for cut in [*cuts, None]:
        headers = {"Last-Event-ID": seen[-1].id} if seen else {}
        part = await collect(http, url, stop_after=cut, headers=headers)
        seen.extend(part)
        if seen and seen[-1].event == t.RUN_COMPLETED:
            break
    await writing
    assert [int(e.id) for e in seen] == list(range(1, total + 1))
    assert [e.body["seq"] for e in seen] == list(range(1, total + 1))
    assert seen[-1].event == t.RUN_COMPLETED


async def test_disconnected_clients_release_their_subscription(
    http: httpx.AsyncClient, db: Database, tenant: TenantContext
) -> None:
    run = await make_run(db, tenant.tenant_id)
    await emit(db, tenant.tenant_id, run, t.RUN_STARTED)
    hub = hub_for(db)
    baseline = hub.subscribers
    for _ in range(3):
        assert len(await collect(http, f"/v1/runs/{run}/events/stream", stop_after=1)) == 1
    await eventually(lambda: hub.subscribers <= baseline)
    assert hub.subscribers == baseline


async def test_tenant_stream_carries_only_own_run_level_events(
    http: httpx.AsyncClient, db: Database, tenant: TenantContext
) -> None:
    other = await make_tenant(db)
    mine, theirs = await make_run(db, tenant.tenant_id), await make_run(db, other.tenant_id)
    got: list[SSE] = []

    async def reader() -> None:
        async with http.stream("GET", "/v1/events/stream") as response:
            assert response.status_code == 200
            async for event in read_sse(response):
                got.append(event)
                if len(got) == 2:
                    return

    reading = asyncio.create_task(reader())
    await eventually(lambda: hub_for(db).tenant_subscribers > 0)
    await emit(db, other.tenant_id, theirs, t.RUN_STARTED, t.RUN_COMPLETED)
    await emit(db, tenant.tenant_id, mine, t.RUN_STARTED, t.TASK_STARTED, t.LLM_DELTA)
    await emit(db, tenant.tenant_id, mine, t.TASK_COMPLETED, t.RUN_COMPLETED)
    async with asyncio.timeout(5):
        await reading
    assert [(e.event, e.body["run_id"], e.body["seq"]) for e in got] == [
        (t.RUN_STARTED, str(mine), 1), (t.RUN_COMPLETED, str(mine), 4)
    ]
    assert all(e.id is None for e in got)


# --- CLI -------------------------------------------------------------------------------


async def test_cli_prints_and_follows_a_run(cli, settings: Settings, db: Database,
                                            tenant: TenantContext) -> None:
    run = await make_run(db, tenant.tenant_id)
    await emit(db, tenant.tenant_id, run, t.RUN_STARTED, t.TASK_STARTED)
    done = await asyncio.to_thread(cli, "events", str(run))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert [line.split()[:3:2] for line in lines] == [["1", t.RUN_STARTED], ["2", t.TASK_STARTED]]
    as_json = await asyncio.to_thread(cli, "events", str(run), "--json", "--type", "task.*")
    assert [json.loads(x)["seq"] for x in as_json.stdout.splitlines()] == [2]

    follower = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agentplane", "events", str(run), "--follow", "--after", "1",
        env=cli_env(settings), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert follower.stdout is not None
        async with asyncio.timeout(20):
            first = await follower.stdout.readline()
            assert first.split()[0] == b"2"
            await emit(db, tenant.tenant_id, run, t.TASK_COMPLETED, t.RUN_FAILED)
            rest, err = await follower.communicate()
        assert follower.returncode == 0, err
        assert [line.split()[0] for line in rest.splitlines()] == [b"3", b"4"]
    finally:
        if follower.returncode is None:
            follower.kill()
            await follower.wait()

    missing = await asyncio.to_thread(cli, "events", str(uuid4()))
    assert missing.returncode == 2 and "not found" in missing.stderr
    bad = await asyncio.to_thread(cli, "events", "not-a-uuid")
    assert bad.returncode == 2 and "not a run id" in bad.stderr
    both = await asyncio.to_thread(cli, "events", str(run), "--follow", "--type", "task.*")
    assert both.returncode == 2 and "cannot be combined" in both.stderr
    for args in (["--after", "-1"], ["--type", "Not A Type"]):
        refused = await asyncio.to_thread(cli, "events", str(run), *args)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, args
