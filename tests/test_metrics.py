"""GET /metrics: Prometheus text, no credential needed, counters that move by what
happened (requests by route template, LLM calls, tokens and cost, budget refusals,
claims, tasks, event fan-out), the queue and runs read from the database at scrape
time, the pools; off, or on a port of its own."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from typing import Any
from uuid import UUID, uuid4

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentplane import metrics
from agentplane.app import create_app
from agentplane.config import Settings
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.pool import Database
from agentplane.errors import ConfigError
from agentplane.events.stream import hub_for
from tests.conftest import free_port
from tests.events.helpers import emit, make_run
from tests.llm.helpers import tenant
from tests.runtime.helpers import add_agents, agent, settle, worker
from tests.support.processes import start_up, wait_ready


def parse(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset], float]:
    r = await client.get("/metrics")  # no credential
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


async def test_requests_are_counted_by_route_template_and_status(client, db) -> None:
    t = await tenant(db)
    before = await scrape(client)
    for _ in range(3):  # three raw paths, one template
        r = await client.get(f"/v1/runs/{uuid4()}", headers=t.headers)
        assert r.status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404
    after = await scrape(client)
    route = {"method": "GET", "route": "/v1/runs/{run_id}"}
    moved = value(after, "agentplane_http_requests_total", **route, status="404") - value(
        before, "agentplane_http_requests_total", **route, status="404"
    )
    assert moved == 3
    timed = value(after, "agentplane_http_request_duration_seconds_count", **route) - value(
        before, "agentplane_http_request_duration_seconds_count", **route
    )
    assert timed == 3
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert value(after, "agentplane_http_requests_total", **unmatched) - value(
        before, "agentplane_http_requests_total", **unmatched
    ) == 1
    # No raw path becomes a label.
    assert not any("/no/such/path" in str(labels) for _, labels in after)
    # The scrape before this one was counted too, under its own route (this one is counted
    # once it has answered).
    scrapes = {"method": "GET", "route": "/metrics", "status": "200"}
    assert value(after, "agentplane_http_requests_total", **scrapes) - value(
        before, "agentplane_http_requests_total", **scrapes
    ) == 1


async def test_an_llm_call_moves_calls_tokens_and_cost(client, db) -> None:
    t = await tenant(db)
    r = await client.post(
        "/v1/llm/models",
        headers=t.headers,
        json={
            "provider": "offline",
            "name": "offline-1",
            "price": {"input_per_mtok": "2", "output_per_mtok": "8",
                      "valid_from": "2000-01-01T00:00:00Z"},
        },
    )
    assert r.status_code == 201, r.text
    before = await scrape(client)
    r = await client.post("/v1/llm/providers/offline/test", headers=t.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    after = await scrape(client)
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT model, cost_usd FROM llm_calls WHERE id = %s",
                                 [UUID(body["call_id"])])
        call = await cur.fetchone()
    assert call["cost_usd"] > 0
    labels = {"provider": "offline", "model": call["model"]}

    def delta(name: str, **more: str) -> float:
        return value(after, name, **labels, **more) - value(before, name, **labels, **more)

    assert delta("agentplane_llm_calls_total", status="completed") == 1
    assert delta("agentplane_llm_tokens_total", kind="prompt") == body["prompt_tokens"] > 0
    assert delta("agentplane_llm_tokens_total", kind="completion") == body["completion_tokens"]
    assert delta("agentplane_llm_cost_usd_total") == pytest.approx(float(call["cost_usd"]))
    assert delta("agentplane_llm_call_duration_seconds_count") == 1


async def test_a_budget_refusal_is_counted_by_budget(client, db) -> None:
    t = await tenant(db, token_limit=1)
    before = await scrape(client)
    r = await client.post("/v1/llm/providers/offline/test", headers=t.headers)
    assert r.status_code == 402, r.text
    after = await scrape(client)
    name = "agentplane_budget_refusals_total"
    assert value(after, name, budget="tenant") - value(before, name, budget="tenant") == 1
    failed = {"provider": "offline", "model": "offline-1", "status": "completed"}
    # Refused before it went out: no call is counted.
    assert value(after, "agentplane_llm_calls_total", **failed) == value(
        before, "agentplane_llm_calls_total", **failed
    )


async def test_a_run_moves_claims_tasks_calls_and_the_database_counts(
    client, db: Database, settings: Settings
) -> None:
    t = await tenant(db)
    await add_agents(client, t, agent("solo"))
    definition = {"name": "one-step", "tasks": {"only": {"agent": "solo", "instruction": "Hi"}}}
    r = await client.post("/v1/workflows", json={"definition": definition}, headers=t.headers)
    assert r.status_code == 201, r.text
    before = await scrape(client)
    r = await client.post("/v1/runs", json={"workflow": "one-step"}, headers=t.headers)
    assert r.status_code == 201, r.text
    queued = await scrape(client)
    async with worker(db, settings):
        run = await settle(client, t, r.json()["id"])
    assert run["status"] == "completed", run
    after = await scrape(client)
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT queue, status::text FROM jobs WHERE tenant_id = %s", [t.tenant_id]
        )
        jobs = await cur.fetchall()
        cur = await conn.execute(
            "SELECT count(*) AS n, sum(prompt_tokens) AS prompt FROM llm_calls"
            " WHERE run_id = %s AND status = 'completed'",
            [UUID(run["id"])],
        )
        calls = await cur.fetchone()
    assert [j["status"] for j in jobs] == ["completed"]
    queue = jobs[0]["queue"]

    def delta(name: str, old: dict = before, **labels: str) -> float:
        return value(after, name, **labels) - value(old, name, **labels)

    assert value(queued, "agentplane_jobs", queue=queue, status="pending") - value(
        before, "agentplane_jobs", queue=queue, status="pending"
    ) == 1
    assert delta("agentplane_jobs", queue=queue, status="completed") == 1
    assert delta("agentplane_jobs", queue=queue, status="pending") == 0
    assert delta("agentplane_runs", status="completed") == 1
    assert delta("agentplane_jobs_claimed_total", queue=queue) == 1
    assert delta("agentplane_tasks_total", outcome="completed") == 1
    labels = {"provider": "offline", "model": "offline-1"}
    assert calls["n"] >= 1
    assert delta("agentplane_llm_calls_total", **labels, status="completed") == calls["n"]
    assert delta("agentplane_llm_tokens_total", **labels, kind="prompt") == calls["prompt"]
    # Every status is listed, zero or not: a series does not vanish when it drains.
    dead = frozenset({"queue": queue, "status": "dead_letter"}.items())
    assert ("agentplane_jobs", dead) in after
    assert ("agentplane_runs", frozenset({"status": "cancelled"}.items())) in after


async def test_pools_and_the_database_are_reported(client, settings: Settings) -> None:
    samples = await scrape(client)
    assert value(samples, "agentplane_metrics_database_up") == 1
    assert value(samples, "agentplane_db_pool_max_connections", pool="app") == (
        settings.pool_max_size
    )
    assert value(samples, "agentplane_db_pool_max_connections", pool="owner") == 4
    assert value(samples, "agentplane_db_pool_connections", pool="app") >= 1
    assert value(samples, "agentplane_db_pool_requests_total", pool="app") >= 1


async def test_event_fan_out_lag_is_observed(db: Database) -> None:
    t = await tenant(db)
    run_id = await make_run(db, t.tenant_id)
    name = "agentplane_event_fanout_lag_seconds_count"
    before = parse((await metrics.render(db, {})).decode())
    async with hub_for(db).subscribe_run(t.tenant_id, run_id) as sub:
        await emit(db, t.tenant_id, run_id, "run.note")
        async with asyncio.timeout(10):
            while not sub.events:
                sub.clear()
                await sub.wait(0.5)
    after = parse((await metrics.render(db, {})).decode())
    assert value(after, name) - value(before, name) == 1
    assert value(after, "agentplane_event_fanout_lag_seconds_sum") < 60


async def test_a_scrape_never_hangs_on_a_locked_table(client, endpoints) -> None:
    """The queue's count waits for a lock no longer than its timeout; the scrape answers
    without it, and says so."""
    scrapes = {"method": "GET", "route": "/metrics", "status": "200"}
    before = value(await scrape(client), "agentplane_http_requests_total", **scrapes)
    with psycopg.connect(endpoints.owner) as locker:
        locker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        samples = await scrape(client)
        took = time.monotonic() - started
        locker.rollback()
    assert value(samples, "agentplane_metrics_database_up") == 0
    assert not any(name == "agentplane_jobs" for name, _ in samples)
    assert took < metrics.DB_SECONDS + 1
    # The rest is there: the counters, with the scrape before this one.
    assert value(samples, "agentplane_http_requests_total", **scrapes) == before + 1
    samples = await scrape(client)
    assert value(samples, "agentplane_metrics_database_up") == 1


async def test_metrics_off_is_404(db: Database, settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"metrics": False}), db=db)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://testserver"
    ) as c:
        r = await c.get("/metrics")
        assert r.status_code == 404
        assert (await c.get("/health")).status_code == 200


async def test_a_metrics_port_serves_them_there_and_not_on_the_api(
    db: Database, settings: Settings
) -> None:
    port = free_port()
    app = create_app(settings.model_copy(update={"metrics_port": port}), db=db)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as side,
    ):
        health = {"method": "GET", "route": "/health", "status": "200"}
        r = await side.get("/metrics")
        assert r.status_code == 200, r.text
        before = value(parse(r.text), "agentplane_http_requests_total", **health)
        assert (await api.get("/metrics")).status_code == 404
        assert (await api.get("/health")).status_code == 200
        r = await side.get("/metrics")
        assert r.status_code == 200, r.text
        samples = parse(r.text)
        assert value(samples, "agentplane_metrics_database_up") == 1
        # The API's requests are counted where the metrics are served: this one /health.
        assert value(samples, "agentplane_http_requests_total", **health) == before + 1
        assert (await side.get("/health")).status_code == 404  # only metrics there
    with pytest.raises(httpx.ConnectError):  # closed with the app
        async with httpx.AsyncClient() as c:
            await c.get(f"http://127.0.0.1:{port}/metrics")


async def test_a_metrics_port_in_use_is_a_clear_error(db: Database, settings: Settings) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = create_app(settings.model_copy(update={"metrics_port": port}), db=db)
        with pytest.raises(ConfigError, match=f"port {port} .* AGENTPLANE_METRICS_PORT"):
            async with app.router.lifespan_context(app):
                pass


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGENTPLANE_METRICS": "maybe"}, "AGENTPLANE_METRICS:"),
        ({"AGENTPLANE_METRICS_PORT": "99999"}, "AGENTPLANE_METRICS_PORT:"),
        ({"AGENTPLANE_METRICS_PORT": "8400", "AGENTPLANE_PORT": "8400"}, "must differ"),
    ],
)
def test_bad_metrics_settings_are_one_clear_line(cli, env: dict[str, Any], message: str) -> None:
    result = cli("config", **env)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr



def test_agentplane_up_with_a_metrics_port(tmp_path, pg_server: EmbeddedServer) -> None:
    """A real `agentplane up` on a fresh home: metrics on their own port and not on the
    API's; both close on SIGTERM. Its first start names the optional extensions the
    embedded server lacks once, at info."""
    home, port, side = tmp_path / "home", free_port(), free_port()
    proc = start_up(home, port, AGENTPLANE_METRICS_PORT=str(side))
    try:
        wait_ready(port, proc)
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
        r = httpx.get(f"http://127.0.0.1:{side}/metrics")
        assert r.status_code == 200, r.text
        samples = parse(r.text)
        assert value(samples, "agentplane_metrics_database_up") == 1
        assert value(samples, "agentplane_db_pool_max_connections", pool="worker") >= 1
        assert value(samples, "agentplane_http_requests_total", method="GET", route="/ready",
                     status="200") >= 1
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
        EmbeddedServer(home).stop()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    entries = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    with psycopg.connect(pg_server.conninfo()) as conn:  # the same server binaries
        cur = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'btree_gin'")
        lacking = cur.fetchone() is None
    about = [e for e in entries if "btree_gin" in e["msg"]]
    assert len(about) == int(lacking) and all(e["level"] == "info" for e in about), about
