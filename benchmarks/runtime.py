"""Orchestration overhead of the runtime with the offline provider (zero model latency):
tasks per second through a 3-node chain and a 50-node fan-out/fan-in DAG, with 1 and 4
workers, the share of wall time spent waiting on the database, and per-task overhead
(queue claim to task committed: state machine, LLM layer bookkeeping, tracing writes).

Each task is one agent turn with one LLM call through the LLM layer (provider resolved,
budget reserved, call and usage record written, budget settled) and its full trace
(agent execution, transitions, events). Workers run in this process as asyncio
workers, each with its own pool. Goal: >= 500 tasks/s with 4 workers, p50 < 5 ms.

    python benchmarks/runtime.py [--tasks 600]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time
from pathlib import Path

import psycopg

from agentplane.auth.models import Principal
from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database

SERVER = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "256MB",
}

CHAIN = {
    "name": "chain3",
    "tasks": {
        "a": {"agent": "bench", "instruction": "first"},
        "b": {"agent": "bench", "instruction": "second", "depends_on": ["a"]},
        "c": {"agent": "bench", "instruction": "third", "depends_on": ["b"]},
    },
}
FAN = {
    "name": "fan50",
    "tasks": {
        "root": {"agent": "bench", "instruction": "split"},
        **{
            f"leaf{i}": {"agent": "bench", "instruction": f"part {i}", "depends_on": ["root"]}
            for i in range(48)
        },
        "join": {
            "agent": "bench",
            "instruction": "join",
            "depends_on": [f"leaf{i}" for i in range(48)],
        },
    },
}


class DbClock:
    """Wall time during which at least one statement was in flight (union of intervals)."""

    def __init__(self) -> None:
        self.inflight = 0
        self.since = 0.0
        self.busy = 0.0

    def install(self) -> None:
        original = psycopg.AsyncConnection.execute
        clock = self

        async def execute(conn, *args, **kwargs):
            if clock.inflight == 0:
                clock.since = time.perf_counter()
            clock.inflight += 1
            try:
                return await original(conn, *args, **kwargs)
            finally:
                clock.inflight -= 1
                if clock.inflight == 0:
                    clock.busy += time.perf_counter() - clock.since

        psycopg.AsyncConnection.execute = execute


async def setup(home: Path, port: int) -> tuple[Database, Settings, Principal]:
    from agentplane.agents import service as agents
    from agentplane.agents.models import AgentIn
    from agentplane.tenancy import service as tenancy
    from agentplane.tenancy.service import NewUser
    from agentplane.workflows import service
    from agentplane.workflows.models import WorkflowIn

    conf = Settings(
        home=home,
        embedded_listen="127.0.0.1",
        embedded_port=port,
        database_name="bench_runtime",
        env="test",
        pool_max_size=40,
    )
    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    db = Database(conf, endpoints)
    await db.open()
    tenant, user = await tenancy.create_tenant(
        db,
        name="bench",
        slug="bench",
        owner=NewUser(email="bench@bench.localhost"),
        token_limit=10**12,
    )
    principal = Principal(
        tenant_id=tenant["id"], user_id=user, role="owner", scopes=frozenset(), api_key_id=None
    )
    async with db.tenant_connection(principal.tenant_id) as conn:
        await agents.create(
            conn, AgentIn(id="bench", name="Bench", role="benchmark", max_tokens=64)
        )
        for definition in (CHAIN, FAN):
            await service.save_workflow(conn, WorkflowIn(definition=definition), user)
    return db, conf, principal


async def measure(
    db: Database,
    conf: Settings,
    principal: Principal,
    workflow: str,
    runs: int,
    workers: int,
    clock: DbClock,
) -> dict[str, float]:
    from agentplane.queue.registry import registry
    from agentplane.queue.worker import Worker, WorkerOptions
    from agentplane.runtime import handler
    from agentplane.workflows import service
    from agentplane.workflows.models import RunIn

    ids = []
    async with db.tenant_connection(principal.tenant_id) as conn:
        for _ in range(runs):
            run = await service.create_run(conn, db, principal, RunIn(workflow=workflow))
            ids.append(run.id)
    handler.use(db, conf)
    pool = [
        Worker(
            db.endpoints.app,
            WorkerOptions(poll_interval=0.01, concurrency=16, schedules=False, worker_id=f"w{i}"),
            registry,
        )
        for i in range(workers)
    ]
    clock.busy = 0.0
    started = time.perf_counter()
    tasks = [asyncio.create_task(w.run()) for w in pool]
    while True:
        async with db.admin_connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')) "
                "AS done, count(*) FILTER (WHERE status = 'failed') AS failed FROM runs "
                "WHERE id = ANY(%s)",
                [ids],
            )
            row = await cur.fetchone()
        if row["done"] == len(ids):
            break
        await asyncio.sleep(0.02)
    wall = time.perf_counter() - started
    busy = clock.busy
    for w in pool:
        w.stop()
    await asyncio.gather(*tasks)
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 FROM tasks "
            "WHERE run_id = ANY(%s) AND status = 'completed'",
            [ids],
        )
        stats = await cur.fetchone()
    assert row["failed"] == 0, f"{row['failed']} runs failed"
    return {
        "tasks": stats["n"],
        "wall": wall,
        "tps": stats["n"] / wall,
        "db_share": min(busy / wall, 1.0),
        "p50": stats["p50"],
        "p99": stats["p99"],
    }


async def main(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)
    home = Path(tempfile.mkdtemp(prefix="agentplane-bench-"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = EmbeddedServer(home, listen="127.0.0.1", port=port, settings=SERVER)
    server.acquire()
    try:
        db, conf, principal = await setup(home, port)
        clock = DbClock()
        clock.install()
        rows = []
        for workflow, size in (("chain3", 3), ("fan50", 50)):
            for workers in (1, 4):
                runs = max(1, args.tasks // size)
                rows.append(
                    (
                        workflow,
                        workers,
                        await measure(db, conf, principal, workflow, runs, workers, clock),
                    )
                )
        await db.close()
    finally:
        server.stop()
    print(f"\nruntime orchestration overhead (offline provider, {args.tasks} tasks per row)\n")
    print(
        f"{'DAG':<8} {'workers':>7} {'tasks':>6} {'tasks/s':>9} {'db share':>9} "
        f"{'task p50 ms':>12} {'task p99 ms':>12}"
    )
    for workflow, workers, m in rows:
        print(
            f"{workflow:<8} {workers:>7} {m['tasks']:>6} {m['tps']:>9.0f} "
            f"{m['db_share']:>8.0%} {m['p50']:>12.1f} {m['p99']:>12.1f}"
        )
    print("\ngoal: >= 500 tasks/s with 4 workers; per-task overhead p50 < 5 ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=600, help="tasks per measurement")
    asyncio.run(main(parser.parse_args()))
