"""The dashboard's server time per page, beside the JSON API route that answers the same.

    python -m benchmarks.dashboard [--runs 1000000] [--records 10000000] [--calls 10000]
                                   [--loads 200]

One embedded PostgreSQL. A tenant gets RUNS finished runs, RECORDS usage records over the
last 90 days (through the real table: partitions, the rollup triggers), and one run of 50
tasks with CALLS LLM calls and 30,000 events. Then, signed in through the sign-in form,
each page is loaded LOADS times in this process (the ASGI app, no network) and so is
its JSON peer with an API key: the overview beside GET /v1/usage/overview, the runs list
beside GET /v1/runs, the big run beside its tree without calls plus its first page of
calls (what the page reads; the whole tree, every call in one answer, is shown too), the
usage page beside GET /v1/usage. It prints p50 and p99 in milliseconds and the page's
share over its peer: the template's own cost. The server's directory is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import socket
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from agentplane.app import create_app
from agentplane.auth import keys
from agentplane.auth.models import ApiKeyIn
from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database
from agentplane.events import service as events
from agentplane.events.models import NewEvent
from agentplane.tenancy import tenants
from agentplane.tenancy.users import NewUser

SERVER = {"shared_buffers": "512MB", "max_wal_size": "4GB", "maintenance_work_mem": "256MB",
          "work_mem": "32MB", "fsync": "off", "synchronous_commit": "off"}
EMAIL, PASSWORD = "bench@example.com", "a long passphrase for the benchmark"
CHUNK = 200_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def setup(home: Path, port: int) -> Database:
    conf = Settings(home=home, embedded_listen="127.0.0.1", embedded_port=port,
                    database_name="bench_dashboard", env="development", pool_min_size=2,
                    pool_max_size=8, log_level="WARNING")
    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    db = Database(conf, endpoints)
    await db.open()
    return db


async def load(db: Database, runs: int, records: int, calls: int) -> tuple[uuid.UUID, str]:
    """The tenant's data; (the big run's id, an API key)."""
    tenant, user_id = await tenants.create_tenant(
        db, name="bench", slug="bench", owner=NewUser(email=EMAIL, password=PASSWORD),
        rate_limit_per_hour=10_000_000)
    tid = tenant["id"]
    _, key = await keys.create_key(
        db, tid, ApiKeyIn(name="bench", scopes=["runs:read", "usage:read", "events:read",
                                                "llm:read"],
                          rate_limit_per_hour=10_000_000, user_id=user_id), actor=None)
    t0 = time.perf_counter()
    async with db.admin_connection() as conn:
        await conn.execute(
            "SELECT usage_records_create_partition(now() - make_interval(months => m)), "
            "events_create_partition(now() - make_interval(months => m)) "
            "FROM generate_series(0, 3) AS m")
        cur = await conn.execute(
            "INSERT INTO agents (tenant_id, slug, name, role, model) SELECT %s, "
            "'agent-' || i, 'Agent ' || i, 'bench', 'openai/gpt-4o' "
            "FROM generate_series(1, 20) AS i RETURNING id", [tid])
        agents = [r["id"] for r in await cur.fetchall()]
    for start in range(0, runs, CHUNK):
        n = min(CHUNK, runs - start)
        async with db.admin_connection() as conn:
            await conn.execute(
                """
                INSERT INTO runs (tenant_id, kind, mode, query, status, total_tasks,
                                  completed_tasks, total_tokens, total_cost_usd, duration_ms,
                                  created_at, started_at, completed_at)
                SELECT %(t)s, 'query', 'SIMPLE', 'question ' || i,
                       (ARRAY['completed','completed','completed','failed','cancelled'])
                           [1 + i %% 5],
                       1, 1, 500 + i %% 900, (i %% 97) / 10000.0, 100 + i %% 5000,
                       now() - make_interval(secs => (%(n)s - i) * 7.0),
                       now() - make_interval(secs => (%(n)s - i) * 7.0),
                       now() - make_interval(secs => (%(n)s - i) * 7.0 - 1)
                  FROM generate_series(%(a)s::int, %(b)s::int) AS i
                """, {"t": tid, "n": runs, "a": start + 1, "b": start + n})
    print(f"  {runs:,} runs in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    for start in range(0, records, CHUNK):
        n = min(CHUNK, records - start)
        async with db.admin_connection() as conn:
            await conn.execute(
                """
                INSERT INTO usage_records (tenant_id, created_at, llm_call_id, user_id,
                    agent_id, provider, model, prompt_tokens, completion_tokens,
                    cached_tokens, cost_usd, cost_source, latency_ms)
                SELECT %(t)s, now() - make_interval(secs => (i %% 7776000)),
                       gen_random_uuid(), %(u)s, (%(agents)s::uuid[])[1 + i %% 20],
                       'openai', (ARRAY['gpt-4o','gpt-4o-mini','o4-mini'])[1 + i %% 3],
                       100 + i %% 3000, 10 + i %% 700, i %% 100, (i %% 50) / 100000.0,
                       'price', 100 + i %% 2000
                  FROM generate_series(%(a)s::int, %(b)s::int) AS i
                """, {"t": tid, "u": user_id, "agents": agents, "a": start + 1,
                      "b": start + n})
    print(f"  {records:,} usage records in {time.perf_counter() - t0:.1f} s", flush=True)
    t0 = time.perf_counter()
    run_id = uuid.uuid4()
    per_task = max(1, calls // 50)
    async with db.admin_connection() as conn:
        await conn.execute(
            "INSERT INTO runs (tenant_id, id, kind, mode, query, status, total_tasks, "
            "completed_tasks, started_at, completed_at, duration_ms) VALUES (%s, %s, "
            "'query', 'COMPLEX', 'the big one', 'completed', 50, 50, now() - interval '1 hour', "
            "now(), 3600000)", [tid, run_id])
        await conn.execute(
            """
            WITH t AS (
                INSERT INTO tasks (tenant_id, run_id, node, agent_id, status, instruction,
                                   started_at, completed_at, duration_ms)
                SELECT %(t)s, %(r)s, 'step-' || i, (%(agents)s::uuid[])[1 + i %% 20],
                       'completed', 'do step ' || i,
                       now() - interval '1 hour' + make_interval(secs => i * 60),
                       now() - interval '1 hour' + make_interval(secs => i * 60 + 59), 59000
                  FROM generate_series(1, 50) AS i
                RETURNING id, agent_id, started_at
            ), e AS (
                INSERT INTO agent_executions (tenant_id, run_id, task_id, agent_id, state,
                                              llm_calls, created_at)
                SELECT %(t)s, %(r)s, t.id, t.agent_id, 'COMPLETED', %(per)s, t.started_at
                  FROM t RETURNING id, task_id, agent_id, created_at
            )
            INSERT INTO llm_calls (tenant_id, run_id, task_id, agent_execution_id, agent_id,
                                   provider, model, request, response_content, prompt_tokens,
                                   completion_tokens, cost_usd, cost_source, latency_ms,
                                   status, created_at, completed_at)
            SELECT %(t)s, %(r)s, e.task_id, e.id, e.agent_id, 'openai', 'gpt-4o',
                   jsonb_build_object('messages', jsonb_build_array(jsonb_build_object(
                       'role', 'user', 'content', repeat('context ', 200)))),
                   repeat('answer ', 100), 1600, 700, 0.011, 'price', 250, 'completed',
                   e.created_at + make_interval(secs => j * 0.29),
                   e.created_at + make_interval(secs => j * 0.29 + 0.25)
              FROM e, generate_series(1, %(per)s::int) AS j
            """, {"t": tid, "r": run_id, "agents": agents, "per": per_task})
    for _ in range(30):
        async with db.tenant_connection(tid) as conn:
            await events.append(conn, tenant_id=tid, run_id=run_id, events=[
                NewEvent(type="llm.call_completed", message=f"call {i}") for i in range(1000)])
    async with db.admin_connection() as conn:
        await conn.execute("ANALYZE")
    print(f"  a run of {per_task * 50:,} calls and 30,000 events in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    return run_id, key


async def timed(client: httpx.AsyncClient, path: str, loads: int,
                headers: dict[str, str] | None = None) -> list[float]:
    out = []
    for _ in range(loads):
        t0 = time.perf_counter()
        r = await client.get(path, headers=headers)
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=10_000_000)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--loads", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    home = Path(tempfile.mkdtemp(prefix="agentplane-bench-dashboard-"))
    server = EmbeddedServer(home, listen="127.0.0.1", port=free_port(), settings=SERVER)
    server.acquire()
    try:
        db = await setup(home, server.port)
        try:
            print(f"loading ({args.runs:,} runs, {args.records:,} usage records, "
                  f"{args.calls:,} calls in one run)", flush=True)
            run_id, key = await load(db, args.runs, args.records, args.calls)
            app = create_app(db.settings, db=db)
            api = {"Authorization": f"Bearer {key}"}
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport,
                                         base_url="http://127.0.0.1") as c:
                form = await c.get("/login")
                token = re.search(r'name="csrf" value="([^"]*)"', form.text).group(1)
                r = await c.post("/login", data={"csrf": token, "email": EMAIL,
                                                 "password": PASSWORD})
                assert r.status_code == 303, r.text
                pairs = [
                    ("overview", "/?days=30", ["/v1/usage/overview?since=30d"]),
                    ("runs list", "/runs", ["/v1/runs"]),
                    (f"a run of {args.calls:,} calls", f"/runs/{run_id}",
                     [f"/v1/runs/{run_id}/tree?calls=false", f"/v1/runs/{run_id}/calls",
                      f"/v1/runs/{run_id}/events?tail=100"]),
                    ("usage", "/usage", ["/v1/usage?since=30d"]),
                ]
                print(f"\n{'page':<26}{'p50 ms':>9}{'p99 ms':>9}   {'JSON peer':<44}"
                      f"{'p50 ms':>9}{'p99 ms':>9}{'page/peer':>11}")
                for name, page, peers in pairs:
                    await timed(c, page, 5)  # warm
                    got = await timed(c, page, args.loads)
                    peer = [0.0] * args.loads
                    for path in peers:
                        await timed(c, path, 5, api)
                        for i, v in enumerate(await timed(c, path, args.loads, api)):
                            peer[i] += v
                    label = " + ".join(p.split("?")[0].replace(str(run_id), "{id}")
                                       for p in peers)
                    print(f"{name:<26}{pct(got, 50):>9.1f}{pct(got, 99):>9.1f}   "
                          f"{label[:43]:<44}{pct(peer, 50):>9.1f}{pct(peer, 99):>9.1f}"
                          f"{pct(got, 50) / pct(peer, 50):>10.2f}x")
                whole = await timed(c, f"/v1/runs/{run_id}/tree", 10, api)
                print(f"\n(the whole tree of the big run, every call in one answer: "
                      f"p50 {statistics.median(whole):.0f} ms)")
        finally:
            await db.close()
    finally:
        server.release()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
