"""Orchestration overhead of the runtime with the offline provider (zero model latency):
tasks per second through a 3-node chain and a 50-node fan-out/fan-in DAG, with 1 and 4
workers, per-task overhead (queue claim to task committed: state machine, LLM layer
bookkeeping, tracing writes), and what a task costs: statements, round trips and
transactions, CPU of the workers and of the database server, and the server's share.

Each task is one agent turn with one LLM call through the LLM layer (provider resolved,
budget reserved, call and usage record written, budget settled) and its full trace
(agent execution, transitions, events). Each worker is a process of its own, as
`agentplane worker` runs (16 jobs at once), counting its statements and CPU. Goal:
>= 500 tasks/s with 4 workers, p50 < 5 ms.

    python -m benchmarks.runtime [--tasks 600] [--dags chain3] [--workers 4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
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


class Meter:
    """What the tasks cost: client statements and round trips (counted at the driver),
    this process's CPU, and the database server's CPU (its processes, from /proc).

    The share of time in the database is server CPU over server plus client CPU: wall
    time with a statement in flight says little when many tasks overlap (some statement
    is always in flight, including while the event loop runs Python for other tasks)."""

    def __init__(self, pgdata: Path | None) -> None:
        self.pgdata = pgdata
        self.statements = 0
        self.round_trips = 0
        self.transactions = 0

    def install(self) -> None:
        meter = self
        execute = psycopg.AsyncCursor.execute
        pipeline = psycopg.AsyncConnection.pipeline
        enter = psycopg.AsyncTransaction.__aenter__

        async def counted_execute(cur, *args, **kwargs):
            meter.statements += 1
            if cur.connection._pipeline is None:
                meter.round_trips += 1
                if cur.connection.autocommit:
                    meter.transactions += 1  # a statement on its own is a transaction
            return await execute(cur, *args, **kwargs)

        @contextlib.asynccontextmanager
        async def counted_pipeline(conn):
            async with pipeline(conn) as p:
                yield p
            meter.round_trips += 1

        async def counted_enter(tx):
            meter.transactions += 1
            meter.round_trips += 2  # BEGIN and COMMIT (or ROLLBACK)
            return await enter(tx)

        psycopg.AsyncCursor.execute = counted_execute
        psycopg.AsyncConnection.pipeline = counted_pipeline
        psycopg.AsyncTransaction.__aenter__ = counted_enter

    def server_cpu(self) -> float:
        """Seconds of CPU used by the server's processes, live and exited."""
        if self.pgdata is None:
            return float("nan")
        try:
            postmaster = int((self.pgdata / "postmaster.pid").read_text().split()[0])
            tick = os.sysconf("SC_CLK_TCK")

            def fields(pid: int) -> list[str]:
                return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

            main = fields(postmaster)
            total = sum(int(x) for x in main[11:15])  # utime stime cutime cstime
            for child in Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text().split():
                with contextlib.suppress(OSError):
                    total += sum(int(x) for x in fields(int(child))[11:13])
            return total / tick
        except (OSError, ValueError, IndexError):
            return float("nan")

    def snapshot(self) -> tuple[int, int, int, float, float]:
        return (
            self.statements,
            self.round_trips,
            self.transactions,
            time.process_time(),
            self.server_cpu(),
        )


async def setup(home: Path, port: int) -> tuple[Database, Settings, Principal]:
    from agentplane.agents import service as agents
    from agentplane.agents.models import AgentIn
    from agentplane.tenancy import tenants
    from agentplane.tenancy.users import NewUser
    from agentplane.workflows.definitions import save_workflow
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
    tenant, user = await tenants.create_tenant(
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
            await save_workflow(conn, WorkflowIn(definition=definition), user)
    return db, conf, principal


def worker_env(conf: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
    env.update(
        AGENTPLANE_HOME=str(conf.home),
        AGENTPLANE_DATABASE_NAME=conf.database_name,
        AGENTPLANE_EMBEDDED_LISTEN=conf.embedded_listen,
        AGENTPLANE_EMBEDDED_PORT=str(conf.embedded_port),
        AGENTPLANE_ENV="test",
        AGENTPLANE_LOG_LEVEL="ERROR",
        AGENTPLANE_POOL_MAX_SIZE=str(conf.pool_max_size),
    )
    return env


async def worker_process(name: str, concurrency: int) -> None:
    """One worker (`--worker`): ready, then runs jobs from "go" to "stop" on stdin, then
    prints what it spent as JSON."""
    from agentplane.config import get_settings
    from agentplane.queue.registry import registry
    from agentplane.queue.worker import Worker, WorkerOptions
    from agentplane.runtime import handler

    logging.disable(logging.WARNING)
    conf = get_settings()
    endpoints = ep.resolve(conf, start=False)
    db = Database(conf, endpoints)
    await db.open()
    handler.use(db, conf)
    meter = Meter(None)
    meter.install()
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print("ready", flush=True)
    assert (await reader.readline()).strip() == b"go"
    opts = WorkerOptions(
        poll_interval=1.0, concurrency=concurrency, schedules=False, worker_id=name
    )
    w = Worker(endpoints.app, opts, registry)
    before = meter.snapshot()
    running = asyncio.create_task(w.run())
    await reader.readline()  # stop
    after = meter.snapshot()
    w.stop()
    await running
    await db.close()
    keys = ("statements", "trips", "transactions", "cpu")
    print(json.dumps({k: b - a for k, a, b in zip(keys, before, after, strict=False)}), flush=True)


async def measure(
    db: Database,
    conf: Settings,
    principal: Principal,
    workflow: str,
    runs: int,
    workers: int,
    meter: Meter,
    concurrency: int = 16,
) -> dict[str, float]:
    from agentplane.workflows.models import RunIn
    from agentplane.workflows.runs import create_run

    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.runtime",
            "--worker",
            f"w{i}",
            str(concurrency),
            env=worker_env(conf),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for i in range(workers)
    ]
    try:
        for proc in procs:
            ready = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert ready.strip() == b"ready", ready
        ids = []
        async with db.tenant_connection(principal.tenant_id) as conn:
            for _ in range(runs):
                run = await create_run(conn, db, principal, RunIn(workflow=workflow))
                ids.append(run.id)
        server_before = meter.server_cpu()
        started = time.perf_counter()
        for proc in procs:
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        while True:
            async with db.admin_connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', "
                    "'cancelled')) AS done, count(*) FILTER (WHERE status = 'failed') AS failed "
                    "FROM runs WHERE id = ANY(%s)",
                    [ids],
                )
                row = await cur.fetchone()
            if row["done"] == len(ids):
                break
            await asyncio.sleep(0.02)
        wall = time.perf_counter() - started
        server = meter.server_cpu() - server_before
        spent = []
        for proc in procs:
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            spent.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n, percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms) AS p50,"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY duration_ms) AS p99 FROM tasks "
            "WHERE run_id = ANY(%s) AND status = 'completed'",
            [ids],
        )
        stats = await cur.fetchone()
    assert row["failed"] == 0, f"{row['failed']} runs failed"
    n = stats["n"]
    client = sum(s["cpu"] for s in spent)
    return {
        "tasks": n,
        "wall": wall,
        "tps": n / wall,
        "statements": sum(s["statements"] for s in spent) / n,
        "trips": sum(s["trips"] for s in spent) / n,
        "transactions": sum(s["transactions"] for s in spent) / n,
        "client_ms": client * 1000 / n,
        "server_ms": server * 1000 / n,
        "db_share": server / (server + client),
        "p50": stats["p50"],
        "p99": stats["p99"],
    }


async def vacuum(db: Database) -> None:
    """Each row starts from a vacuumed database: the dead rows an earlier row left are
    cleaned up here, not by autovacuum during the next row, on its CPU."""
    async with await psycopg.AsyncConnection.connect(db.endpoints.owner, autocommit=True) as conn:
        await conn.execute("VACUUM (ANALYZE)")


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
        meter = Meter(home / "pgdata")
        rows = []
        for workflow, size in (("chain3", 3), ("fan50", 50)):
            if workflow not in args.dags:
                continue
            for workers in args.workers:
                runs = max(1, args.tasks // size)
                await vacuum(db)
                m = await measure(db, conf, principal, workflow, runs, workers, meter)
                rows.append((workflow, f"{workers}x16", m))
        if "chain3" in args.dags:
            # One task at a time: its duration is the overhead alone, with no queueing
            # behind other tasks for the worker's CPU.
            await vacuum(db)
            m = await measure(db, conf, principal, "chain3", 50, 1, meter, concurrency=1)
            rows.append(("chain3", "1x1", m))
        await db.close()
    finally:
        server.stop()
    print(f"\nruntime orchestration overhead (offline provider, {args.tasks} tasks per row)\n")
    print(
        f"{'DAG':<8} {'workers':>7} {'tasks':>6} {'tasks/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'stmts':>6} {'trips':>6} {'txns':>5} {'py ms':>6} {'db ms':>6} {'db share':>8}"
    )
    for workflow, workers, m in rows:
        print(
            f"{workflow:<8} {workers:>7} {m['tasks']:>6} {m['tps']:>8.0f} {m['p50']:>7.1f} "
            f"{m['p99']:>7.1f} {m['statements']:>6.1f} {m['trips']:>6.1f} "
            f"{m['transactions']:>5.1f} {m['client_ms']:>6.2f} {m['server_ms']:>6.2f} "
            f"{m['db_share']:>8.0%}"
        )
    print(
        "\nworkers: processes x jobs each runs at once. p50/p99: task duration, claimed to"
        " committed. Per task: stmts, trips (client round trips), txns (a statement in"
        " autocommit counts as one), and CPU in ms of the worker processes (py) and of the"
        " database server (db); db share = db / (db + py), the share of time in the database"
    )
    single = [m for workflow, workers, m in rows if workers == "1x1"]
    if single:
        m = single[0]
        print(
            f"\nper-task overhead (1x1: one task at a time, state machine, LLM layer"
            f" bookkeeping and tracing writes): p50 {m['p50']:.1f} ms;"
            f" share of time in the database {m['db_share']:.0%}"
        )
    print("\ngoal: >= 500 tasks/s with 4 workers; per-task overhead p50 < 5 ms")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        asyncio.run(worker_process(sys.argv[2], int(sys.argv[3])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=600, help="tasks per measurement")
    parser.add_argument("--dags", nargs="+", default=["chain3", "fan50"], help="DAGs to run")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 4], help="worker counts")
    asyncio.run(main(parser.parse_args()))
