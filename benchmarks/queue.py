"""Queue benchmark: agentplane side by side with pgqueuer and procrastinate.

    pip install -e '.[bench]'
    python -m benchmarks.queue [--jobs 50000] [--seconds 10] [--finished 1000000,10000000]
    python -m benchmarks.queue --finished ''    # skip the (slow) finished-rows claim runs

One embedded PostgreSQL (same settings for every system, each in its own
database), no-op handlers. Prints jobs/s for the drain of pre-enqueued jobs and
for steady state (a producer enqueuing in batches while the worker consumes),
agentplane's ratio to each peer, enqueue-to-start latency at 500 jobs/s, and
claim time with 1 and 10 million finished jobs in the table.
"""

# ruff: noqa: ASYNC110
from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg

from agentplane.db import endpoints as ep
from agentplane.db.pool import Database
from agentplane.queue import JobQueue, Registry
from agentplane.queue.service import make_spec
from agentplane.queue.worker import Worker, WorkerOptions
from benchmarks import embedded

SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
          "max_connections": "200", "shared_buffers": "512MB"}
CONCURRENCY = 100
BATCH = 500


# -- agentplane -------------------------------------------------------------------------


async def ap_setup(home: Path, port: int) -> tuple[Database, ep.Endpoints, uuid.UUID]:
    db, endpoints = await embedded.migrated(home, port, "bench_agentplane")
    return db, endpoints, await embedded.tenant(db)


def ap_registry(starts: list[float] | None = None) -> Registry:
    reg = Registry()

    @reg.handler("noop")
    async def noop(ctx) -> None:
        if starts is not None:
            starts.append(time.time() - ctx.payload["t"])

    return reg


async def count_done(conninfo: str, query: str) -> int:
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        cur = await conn.execute(query)
        return (await cur.fetchone())[0]


async def ap_drain(db: Database, endpoints: ep.Endpoints, tenant: uuid.UUID, n: int) -> float:
    queue = JobQueue(db, ap_registry())
    for i in range(0, n, BATCH):
        await queue.enqueue_many([make_spec("noop") for _ in range(min(BATCH, n - i))],
                                 tenant_id=tenant, allow_unknown=True)
    worker = Worker(endpoints.app, WorkerOptions(concurrency=CONCURRENCY, schedules=False),
                    ap_registry())
    started = time.perf_counter()
    task = asyncio.create_task(worker.run())
    while worker.processed < n:
        await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    worker.stop()
    await task
    return n / elapsed


async def steady(produce, consume_count, stop_consumer, seconds: float) -> float:
    """Producer at full speed; rate = jobs finished during the measured window."""
    stop = asyncio.Event()

    async def producer() -> None:
        while not stop.is_set():
            await produce()

    prod = asyncio.create_task(producer())
    await asyncio.sleep(1.0)  # warm-up
    before, t0 = consume_count(), time.perf_counter()
    await asyncio.sleep(seconds)
    rate = (consume_count() - before) / (time.perf_counter() - t0)
    stop.set()
    await prod
    await stop_consumer()
    return rate


async def ap_steady(db: Database, endpoints: ep.Endpoints, tenant: uuid.UUID,
                    seconds: float) -> float:
    queue = JobQueue(db, ap_registry())
    worker = Worker(endpoints.app, WorkerOptions(concurrency=CONCURRENCY, schedules=False),
                    ap_registry())
    task = asyncio.create_task(worker.run())

    async def produce() -> None:
        await queue.enqueue_many([make_spec("noop") for _ in range(BATCH)], tenant_id=tenant,
                                 allow_unknown=True)
        produced[0] += BATCH
        while worker.processed + 4 * BATCH < produced[0]:  # a bounded backlog
            await asyncio.sleep(0.002)

    produced = [0]

    async def stop_worker() -> None:
        while worker.processed < produced[0]:  # leave no backlog for the next measure
            await asyncio.sleep(0.01)
        worker.stop()
        await task

    return await steady(produce, lambda: worker.processed, stop_worker, seconds)


async def ap_latency(db: Database, endpoints: ep.Endpoints, tenant: uuid.UUID,
                     rate: int = 500, seconds: float = 5) -> tuple[float, float]:
    starts: list[float] = []
    queue = JobQueue(db, ap_registry())
    worker = Worker(endpoints.app, WorkerOptions(concurrency=CONCURRENCY, schedules=False),
                    ap_registry(starts))
    task = asyncio.create_task(worker.run())
    await asyncio.sleep(0.5)
    interval = 1 / rate
    t_next = time.perf_counter()
    for _ in range(int(rate * seconds)):
        await queue.enqueue("noop", {"t": time.time()}, tenant_id=tenant, allow_unknown=True)
        t_next += interval
        await asyncio.sleep(max(0, t_next - time.perf_counter()))
    while len(starts) < int(rate * seconds):
        await asyncio.sleep(0.01)
    worker.stop()
    await task
    ms = sorted(s * 1000 for s in starts)
    return statistics.median(ms), ms[int(len(ms) * 0.99) - 1]


async def ap_claim_time(endpoints: ep.Endpoints, tenant: uuid.UUID, db: Database) -> float:
    """Median ms of a one-job claim with 1,000 jobs waiting."""
    queue = JobQueue(db)
    await queue.enqueue_many([make_spec("noop") for _ in range(1000)], tenant_id=tenant,
                             allow_unknown=True)
    times = []
    async with await psycopg.AsyncConnection.connect(endpoints.app, autocommit=True) as conn:
        for _ in range(300):
            t0 = time.perf_counter()
            await conn.execute(
                "SELECT * FROM queue_claim('bench', '{default}', 1, 30, %s, 1, 16)",
                [uuid.uuid4()])
            times.append((time.perf_counter() - t0) * 1000)
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE jobs SET status = 'completed' WHERE status <> 'completed'")
    return statistics.median(times[50:])


async def add_finished(db: Database, tenant: uuid.UUID, n: int) -> float:
    started = time.perf_counter()
    async with db.admin_connection() as conn:
        for lo in range(0, n, 1_000_000):
            await conn.execute(
                "INSERT INTO jobs (tenant_id, type, status, attempts, created_at, finished_at,"
                " result) SELECT %s, 'noop', 'completed', 1, now() - g * interval '1 ms',"
                " now(), '{}' FROM generate_series(1, %s) g", [tenant, min(1_000_000, n - lo)])
    async with await psycopg.AsyncConnection.connect(db.endpoints.owner,
                                                     autocommit=True) as conn:
        await conn.execute("VACUUM ANALYZE jobs")
    return time.perf_counter() - started


# -- pgqueuer ---------------------------------------------------------------------------------


async def pgq_run(conninfo: str, n: int, seconds: float) -> tuple[float, float]:
    from pgqueuer import QueueManager
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    queries = Queries(PsycopgDriver(conn))
    await queries.install()

    last = [0.0]  # when the drain's last job finished: its shutdown is not the drain's

    async def consume(target: int | None) -> tuple[QueueManager, asyncio.Task, list[int]]:
        wconn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        qm = QueueManager(Queries(PsycopgDriver(wconn)))
        done = [0]

        @qm.entrypoint("noop")
        async def noop(job) -> None:
            done[0] += 1
            if target is not None and done[0] >= target:
                last[0] = time.perf_counter()
                qm.shutdown.set()

        task = asyncio.create_task(qm.run(batch_size=CONCURRENCY // 2,
                                          max_concurrent_tasks=CONCURRENCY * 2))
        return qm, task, done

    for i in range(0, n, BATCH):
        k = min(BATCH, n - i)
        await queries.enqueue(["noop"] * k, [None] * k, [0] * k)
    started = time.perf_counter()
    qm, task, done = await consume(n)
    await task
    drain = n / (last[0] - started)

    qm, task, done = await consume(None)
    sent = [0]

    async def produce() -> None:
        await queries.enqueue(["noop"] * BATCH, [None] * BATCH, [0] * BATCH)
        sent[0] += BATCH
        while done[0] + 4 * BATCH < sent[0]:
            await asyncio.sleep(0.002)

    async def stop() -> None:
        qm.shutdown.set()
        await task

    rate = await steady(produce, lambda: done[0], stop, seconds)
    await conn.close()
    return drain, rate


# -- procrastinate ------------------------------------------------------------------------------


async def proc_run(conninfo: str, n: int, seconds: float) -> tuple[float, float]:
    """Procrastinate's defaults: LISTEN/NOTIFY on (listen_notify=True), so polling only
    backs it up. Its worker fetches one job per round trip; neither its concurrency
    (1, 10, 100) nor a larger connection pool (4, 10, 30) moved it from ~300 jobs/s
    here, so the numbers below are its own, not a setting's."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    done, last = [0], [0.0]

    @app.task(name="noop")
    async def noop() -> None:
        done[0] += 1
        last[0] = time.perf_counter()  # the drain ends with its last job, not the shutdown

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        for i in range(0, n, BATCH):
            await noop.batch_defer_async(*[{} for _ in range(min(BATCH, n - i))])
        started = time.perf_counter()
        await app.run_worker_async(concurrency=CONCURRENCY, wait=False,
                                   install_signal_handlers=False)
        drain = done[0] / (last[0] - started)

        done[0] = 0
        worker = asyncio.create_task(app.run_worker_async(
            concurrency=CONCURRENCY, install_signal_handlers=False,
            fetch_job_polling_interval=0.05))
        sent = [0]

        async def produce() -> None:
            await noop.batch_defer_async(*[{} for _ in range(BATCH)])
            sent[0] += BATCH
            while done[0] + 4 * BATCH < sent[0]:
                await asyncio.sleep(0.002)

        async def stop() -> None:
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)

        rate = await steady(produce, lambda: done[0], stop, seconds)
    return drain, rate


# -- main ---------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    home, port, server = embedded.start("apq-bench-", SERVER)
    rows: list[tuple[str, str, str]] = []
    try:
        db, endpoints, tenant = await ap_setup(home, port)
        ap_d = await ap_drain(db, endpoints, tenant, args.jobs)
        ap_s = await ap_steady(db, endpoints, tenant, args.seconds)
        p50, p99 = await ap_latency(db, endpoints, tenant)
        peers = {}
        if "pgqueuer" in args.peers:
            peers["pgqueuer"] = await pgq_run(embedded.create_db(server, "bench_pgqueuer"),
                                              args.jobs, args.seconds)
        if "procrastinate" in args.peers:
            conninfo = embedded.create_db(server, "bench_procrastinate")
            peers["procrastinate"] = await proc_run(conninfo, args.jobs, args.seconds)
        rows.append((f"drain {args.jobs:,} jobs (jobs/s)", f"{ap_d:,.0f}",
                     "  ".join(f"{k} {v[0]:,.0f} (x{ap_d / v[0]:.2f})" for k, v in peers.items())))
        rows.append(("steady state (jobs/s)", f"{ap_s:,.0f}",
                     "  ".join(f"{k} {v[1]:,.0f} (x{ap_s / v[1]:.2f})" for k, v in peers.items())))
        rows.append(("enqueue-to-start at 500/s p50 / p99 (ms)", f"{p50:.2f} / {p99:.2f}", ""))
        base = await ap_claim_time(endpoints, tenant, db)
        rows.append(("claim, ~0 finished rows (ms)", f"{base:.3f}", ""))
        total = 0
        for target in args.finished:
            took = await add_finished(db, tenant, target - total)
            total = target
            t = await ap_claim_time(endpoints, tenant, db)
            rows.append((f"claim, {target:,} finished rows (ms)", f"{t:.3f}",
                         f"x{t / base:.2f} of empty; rows added in {took:.0f}s"))
        await db.close()
    finally:
        server.stop()
    width = max(len(r[0]) for r in rows)
    print(f"\n{'measure':<{width}}  {'agentplane':>14}  peers (agentplane's ratio)")
    for name, ours, peer in rows:
        print(f"{name:<{width}}  {ours:>14}  {peer}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--finished", default="1000000,10000000",
                        help="cumulative finished-row counts to measure the claim at")
    parser.add_argument("--peers", default="pgqueuer,procrastinate")
    ns = parser.parse_args()
    ns.finished = [int(x) for x in ns.finished.split(",") if x]
    asyncio.run(main(ns))
    sys.exit(0)
