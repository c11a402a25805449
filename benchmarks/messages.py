"""Messages benchmark: agent-to-agent messages sent and acked end to end, side by side
with the bare pattern and with pgqueuer as the transport.

    pip install -e '.[bench]'
    python -m benchmarks.messages [--messages 20000] [--seconds 5] [--peers bare,pgqueuer]

One embedded PostgreSQL (the same settings for every system, each in its own database).
- agentplane: messages to one agent sent in transactions of 100 (service.send), received
  by 1 or 4 instances (Inbox, leases, batches of 100) and acked in batches: row-level
  security, time to live, retries and per-copy history on.
- bare: the pattern's limit on this machine: a table of payloads, rows inserted in
  batches of 100 and taken by a `DELETE ... FOR UPDATE SKIP LOCKED ... RETURNING` loop
  (batches of 100): no ack, lease, TTL or RLS.
- pgqueuer: the same messages as jobs, consumed by 1 or 4 QueueManagers.
Then send-to-receive latency at a steady 1,000 messages/s, one message per transaction
(as a client sends), received by 4 instances woken by NOTIFY.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import statistics
import time
import uuid
from pathlib import Path

import psycopg

from agentplane.agents import service as agents
from agentplane.agents.models import AgentIn, InstanceIn
from agentplane.db.pool import Database
from agentplane.messages import service
from agentplane.messages.inbox import Inbox
from agentplane.messages.models import Destination, MessageIn
from benchmarks import embedded

SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
          "max_connections": "200", "shared_buffers": "512MB"}
BATCH = 100
RECEIVERS = (1, 4)


# -- agentplane ------------------------------------------------------------------------------


async def ap_setup(home: Path, port: int, receivers: int) -> tuple[Database, uuid.UUID, list]:
    db, _ = await embedded.migrated(home, port, "bench_messages", pool_max_size=30,
                                    log_level="WARNING")
    tenant = await embedded.tenant(db)
    async with db.tenant_connection(tenant) as conn:
        await agents.create(conn, AgentIn(id="inbox", name="Inbox", role="receiver"))
        made = [await agents.start_instance(conn, "inbox", InstanceIn(instance_key=f"i{n}"))
                for n in range(receivers)]
    return db, tenant, [m.id for m in made]


def message(t: float | None = None) -> MessageIn:
    return MessageIn(to=Destination(agent="inbox"), type="bench",
                     payload={"t": t if t is not None else 0.0})


async def ap_send(db: Database, tenant: uuid.UUID, n: int) -> None:
    for i in range(0, n, BATCH):
        async with db.tenant_connection(tenant) as conn:
            await service.send(conn, tenant, [message() for _ in range(min(BATCH, n - i))])


async def ap_receive(db: Database, tenant: uuid.UUID, instance: uuid.UUID, done: list[int],
                     target: int, latencies: list[float] | None = None) -> None:
    async with Inbox(db, tenant, "inbox", instance, batch=BATCH) as inbox:
        while done[0] < target:
            got = await inbox.receive(wait_s=1)
            if not got:
                continue
            if latencies is not None:
                now = time.time()
                latencies.extend(now - m.payload["t"] for m in got)
            await inbox.ack(*got)
            done[0] += len(got)


async def ap_throughput(db: Database, tenant: uuid.UUID, instances: list, n: int) -> float:
    """Sent and acked end to end: senders and receivers at once, from the first send to
    the last ack."""
    done = [0]
    started = time.perf_counter()
    senders = [asyncio.create_task(ap_send(db, tenant, n // 4)) for _ in range(4)]
    await asyncio.gather(*(ap_receive(db, tenant, i, done, n // 4 * 4) for i in instances),
                         *senders)
    return done[0] / (time.perf_counter() - started)


async def ap_latency(db: Database, tenant: uuid.UUID, instances: list, rate: int,
                     seconds: float) -> tuple[float, float]:
    latencies: list[float] = []
    total = int(rate * seconds)
    done = [0]

    async def paced(share: int, every: float) -> None:
        start = time.perf_counter()
        for k in range(share):
            await asyncio.sleep(max(0.0, start + k * every - time.perf_counter()))
            async with db.tenant_connection(tenant) as conn:
                await service.send(conn, tenant, [message(time.time())])

    senders = [paced(total // 4, 4 / rate) for _ in range(4)]
    await asyncio.gather(*senders, *(ap_receive(db, tenant, i, done, total // 4 * 4, latencies)
                                     for i in instances))
    latencies.sort()
    return (statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99) - 1] * 1000)


# -- the bare pattern --------------------------------------------------------------------------


BARE = "CREATE TABLE bare (id bigserial PRIMARY KEY, payload jsonb NOT NULL)"
TAKE = ("DELETE FROM bare WHERE id IN (SELECT id FROM bare ORDER BY id LIMIT %s"
        " FOR UPDATE SKIP LOCKED) RETURNING id, payload")


async def bare_run(conninfo: str, n: int, receivers: int) -> float:
    async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
        await conn.execute("DROP TABLE IF EXISTS bare")
        await conn.execute(BARE)
    done = [0]
    target = n // 4 * 4

    async def send() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            for _ in range(0, n // 4, BATCH):
                await conn.execute("INSERT INTO bare (payload) SELECT '{\"t\": 0}'::jsonb"
                                   " FROM generate_series(1, %s)", [BATCH])

    async def take() -> None:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            while done[0] < target:
                cur = await conn.execute(TAKE, [BATCH])
                got = len(await cur.fetchall())
                done[0] += got
                if not got:
                    await asyncio.sleep(0.001)

    started = time.perf_counter()
    await asyncio.gather(*(send() for _ in range(4)), *(take() for _ in range(receivers)))
    return done[0] / (time.perf_counter() - started)


# -- pgqueuer ---------------------------------------------------------------------------------


async def pgq_run(conninfo: str, n: int, receivers: int) -> float:
    from pgqueuer import QueueManager
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    conn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
    queries = Queries(PsycopgDriver(conn))
    await queries.install()
    done = [0]
    target = n // 4 * 4
    managers: list[QueueManager] = []

    async def consume() -> None:
        wconn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        qm = QueueManager(Queries(PsycopgDriver(wconn)))
        managers.append(qm)

        @qm.entrypoint("bench")
        async def bench(job) -> None:
            done[0] += 1
            if done[0] >= target:
                for m in managers:
                    m.shutdown.set()

        await qm.run(batch_size=BATCH, max_concurrent_tasks=4 * BATCH)
        await wconn.close()

    async def send() -> None:
        sconn = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
        q = Queries(PsycopgDriver(sconn))
        for _ in range(0, n // 4, BATCH):
            await q.enqueue(["bench"] * BATCH, [b'{"t": 0}'] * BATCH, [0] * BATCH)
        await sconn.close()

    started = time.perf_counter()
    await asyncio.gather(*(send() for _ in range(4)), *(consume() for _ in range(receivers)))
    rate = done[0] / (time.perf_counter() - started)
    await queries.uninstall()
    await conn.close()
    return rate


# -- main ---------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    home, port, server = embedded.start("apm-bench-", SERVER)
    try:
        db, tenant, instances = await ap_setup(home, port, max(RECEIVERS))
        bare_db = embedded.create_db(server, "bench_bare")
        pgq_db = embedded.create_db(server, "bench_pgqueuer")
        rows = []
        for r in RECEIVERS:
            ours = await ap_throughput(db, tenant, instances[:r], args.messages)
            bare = await bare_run(bare_db, args.messages, r) if "bare" in args.peers else None
            pgq = None
            if "pgqueuer" in args.peers:
                with contextlib.suppress(ImportError):  # not installed: `pip install pgqueuer`
                    pgq = await pgq_run(pgq_db, args.messages, r)
            rows.append((r, ours, bare, pgq))
        p50, p99 = await ap_latency(db, tenant, instances, 1000, args.seconds)
        await db.close()
    finally:
        server.release()

    print(f"\n{args.messages} messages per run; 2 CPUs shared by PostgreSQL, the senders and"
          " the receivers.\n")
    print(f"{'receivers':>9}  {'agentplane/s':>12}  {'bare/s':>9}  {'pgqueuer/s':>10}"
          f"  {'vs bare':>8}  {'vs pgqueuer':>11}")
    for r, ours, bare, pgq in rows:
        print(f"{r:>9}  {ours:>12,.0f}  {(f'{bare:,.0f}' if bare else 'not run'):>9}  "
              f"{(f'{pgq:,.0f}' if pgq else 'not run'):>10}  "
              f"{(f'{ours / bare:.0%}' if bare else '—'):>8}  "
              f"{(f'{ours / pgq:.2f}x' if pgq else '—'):>11}")
    print(f"\nsend to receive at 1,000 messages/s ({args.seconds:g} s, one message per"
          f" transaction, 4 receivers): p50 {p50:.2f} ms, p99 {p99:.2f} ms")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--peers", default="bare,pgqueuer", help="comma-separated; '' for none")
    asyncio.run(main(parser.parse_args()))
