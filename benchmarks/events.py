"""Event log benchmark: batched append vs raw COPY vs one-row INSERTs; SSE fan-out.

    python -m benchmarks.events [--events 100000] [--batch 500] [--subscribers 500]
                                [--runs 500,50] [--rate 2000] [--seconds 10]
                                [--only append|fanout]

One embedded PostgreSQL. Append: the same rows (type, agent, message, small JSON
payload) written by agentplane's `append` (one transaction per batch, sequence
numbers, RLS, NOTIFY), by raw COPY into a bare unindexed table (the practical
limit), and one INSERT per event in autocommit (one row at a time); agentplane and
COPY alternate round by round so that a change in machine load hits both alike.

Fan-out: the API server in its own process (uvicorn, as `agentplane up` runs it);
N SSE subscribers spread evenly over R fresh runs (one row per R: 500 runs is one
subscriber per run, 50 runs ten per run); events appended at RATE/s in
transactions of 4 events on random runs by 16 writers in this process. The
subscribers run in a process of their own, on raw asyncio streams (no HTTP client
library, no JSON parsing), so that the client is not what is measured; each notes
when every event id arrived. Latency runs from just before the appending
transaction's COMMIT to the arrival of the chunk holding the event (both clocks
are this machine's wall clock), over the events committed after a 2 s warm-up.
Every subscriber must see ids 1, 2, 3, ... each once and in order ("in order"
column). CPU columns are the server's and the subscribers' process CPU time over
the measured period, as a share of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import time
import uuid
from array import array
from pathlib import Path

import httpx
import psycopg

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database
from agentplane.events import NewEvent, append
from agentplane.events import types as t
from benchmarks import embedded

SERVER = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
          "max_connections": "300", "shared_buffers": "256MB"}
DB_NAME = "bench_events"
# As a module from the repository root: run as a script, this directory would come
# first on sys.path and its queue.py would shadow the standard library's.
SELF = [sys.executable, "-m", "benchmarks.events"]
ROOT = Path(__file__).resolve().parent.parent
WARMUP = 2.0
ROUNDS = 5  # append: agentplane and COPY alternate, median of each


def settings(home: Path, port: int) -> Settings:
    return Settings(home=home, embedded_listen="127.0.0.1", embedded_port=port,
                    database_name=DB_NAME, env="test", pool_max_size=40,
                    log_level="WARNING")


def event(i: int) -> NewEvent:
    return NewEvent(type=t.AGENT_THINKING, agent="researcher",
                    message=f"considering source {i} of the literature review",
                    payload={"step": i, "tokens": 42, "tool": "search"})


async def setup(conf: Settings) -> tuple[Database, uuid.UUID, str]:
    from agentplane.auth import keys as auth_keys
    from agentplane.auth.models import ApiKeyIn
    from agentplane.tenancy import tenants
    from agentplane.tenancy.users import NewUser

    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    db = Database(conf, endpoints)
    await db.open()
    slug = f"bench-{uuid.uuid4().hex[:8]}"
    tenant, user_id = await tenants.create_tenant(
        db, name=slug, slug=slug, owner=NewUser(email=f"o@{slug}.test"),
        rate_limit_per_hour=10_000_000)
    _, key = await auth_keys.create_key(
        db, tenant["id"], ApiKeyIn(name="bench", scopes=["events:read"],
                                   rate_limit_per_hour=10_000_000, user_id=user_id),
        actor=None)
    return db, tenant["id"], key


async def make_runs(db: Database, tenant_id: uuid.UUID, n: int) -> list[uuid.UUID]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "INSERT INTO runs (tenant_id, kind) SELECT %s, 'query' FROM generate_series(1, %s)"
            " RETURNING id", [tenant_id, n])
        return [r["id"] for r in await cur.fetchall()]


# -- append -----------------------------------------------------------------------------


async def bench_agentplane(db: Database, tenant_id, runs, n: int, batch: int) -> float:
    events = [event(i) for i in range(batch)]
    start = time.perf_counter()
    for i in range(n // batch):
        async with db.tenant_connection(tenant_id) as conn:
            await append(conn, tenant_id=tenant_id, run_id=runs[i % len(runs)], events=events)
    return (n // batch) * batch / (time.perf_counter() - start)


RAW = """CREATE TABLE IF NOT EXISTS events_raw (
    tenant_id uuid, run_id uuid, seq bigint, task_id uuid, type text, agent text,
    message text, payload jsonb, created_at timestamptz DEFAULT now())"""


async def bench_copy(owner: str, tenant_id, runs, n: int, batch: int) -> float:
    rows = [(tenant_id, None, i + 1, None, e.type, e.agent, e.message,
             json.dumps(e.payload)) for i, e in enumerate(event(i) for i in range(batch))]
    async with await psycopg.AsyncConnection.connect(owner) as conn:
        await conn.execute(RAW)
        await conn.execute("TRUNCATE events_raw")
        await conn.commit()
        start = time.perf_counter()
        for i in range(n // batch):
            run = runs[i % len(runs)]
            async with conn.cursor() as cur, cur.copy(
                "COPY events_raw (tenant_id, run_id, seq, task_id, type, agent, message,"
                " payload) FROM STDIN"
            ) as copy:
                for row in rows:
                    await copy.write_row((row[0], run, *row[2:]))
            await conn.commit()
        return (n // batch) * batch / (time.perf_counter() - start)


async def bench_one_row(owner: str, tenant_id, runs, n: int) -> float:
    async with await psycopg.AsyncConnection.connect(owner, autocommit=True) as conn:
        await conn.execute(RAW)
        await conn.execute("TRUNCATE events_raw")
        start = time.perf_counter()
        for i in range(n):
            e = event(i)
            await conn.execute(
                "INSERT INTO events_raw (tenant_id, run_id, seq, type, agent, message, payload)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                [tenant_id, runs[i % len(runs)], i + 1, e.type, e.agent, e.message,
                 json.dumps(e.payload)])
        return n / (time.perf_counter() - start)


# -- fan-out ----------------------------------------------------------------------------


def serve(home: str, pg_port: int, port: int) -> None:
    """The API in its own process (run as `events.py --serve ...`)."""
    import uvicorn

    from agentplane.app import create_app

    conf = settings(Path(home), pg_port)
    uvicorn.run(create_app(conf), host="127.0.0.1", port=port, log_config=None,
                access_log=False, ws="none", lifespan="on")


class Arrivals:
    """(subscriber, id, arrival time) of every event, in flat arrays: hundreds of
    thousands of tuples would make the garbage collector stop this process for long
    enough to show in the latencies it measures."""

    def __init__(self) -> None:
        self.subs, self.ids, self.times = array("l"), array("q"), array("d")

    def add(self, sub: int, seq: int, at: float) -> None:
        self.subs.append(sub)
        self.ids.append(seq)
        self.times.append(at)


async def subscriber(host: str, port: int, key: str, n: int, run_id: str,
                     got: Arrivals, ready: list[int]) -> None:
    """A lean SSE client (raw asyncio stream, chunked decoding, no JSON parsing), so
    that the client side is not what is measured: it notes (subscriber, id, arrival)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET /v1/runs/{run_id}/events/stream HTTP/1.1\r\nHost: {host}\r\n"
                 f"Authorization: Bearer {key}\r\nAccept: text/event-stream\r\n\r\n"
                 .encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    ready.append(1)
    buf = b""
    try:
        while True:
            size = int((await reader.readline()).strip() or b"0", 16)
            if size == 0:
                break
            buf += (await reader.readexactly(size + 2))[:-2]  # chunk, then CRLF
            now = time.time()
            *frames, buf = buf.split(b"\n\n")
            for f in frames:
                if f.startswith(b"id: "):
                    got.add(n, int(f[4:f.index(b"\n")]), now)
    finally:
        writer.close()


async def subscribe(url: str, key: str, runs: list[str], n: int, seconds: float) -> None:
    """The subscribers in their own process (`--subscribe ...`): they connect, print
    READY, note arrivals for `seconds`, then print them and their CPU time as JSON.
    Subscriber i follows runs[i % len(runs)]."""
    got = Arrivals()
    ready: list[int] = []
    host, port = url.removeprefix("http://").split(":")
    subs = [asyncio.create_task(subscriber(host, int(port), key, i, runs[i % len(runs)],
                                           got, ready))
            for i in range(n)]
    async with asyncio.timeout(60):
        while len(ready) < n:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    print("READY", flush=True)
    cpu = time.process_time()
    await asyncio.sleep(seconds)
    cpu = time.process_time() - cpu
    for task in subs:
        task.cancel()
    await asyncio.gather(*subs, return_exceptions=True)
    print(json.dumps({"subs": got.subs.tolist(), "ids": got.ids.tolist(),
                      "times": got.times.tolist(), "cpu": cpu}), flush=True)


def cpu_seconds(pid: int) -> float | None:
    """A process's CPU time so far (Linux /proc), None where that is not available."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_fanout(db: Database, tenant_id, key: str, runs, args, url: str,
                       server_pid: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
    listen = args.seconds + WARMUP + 4
    proc = await asyncio.create_subprocess_exec(
        *SELF, "--subscribe", url, key, ",".join(map(str, runs)),
        str(args.subscribers), str(listen), env=env,
        stdout=asyncio.subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    async with asyncio.timeout(90):
        assert (await proc.stdout.readline()).strip() == b"READY"
    await asyncio.sleep(0.5)
    per_tx, tick, writers = 4, 0.01, 16
    per_writer = args.rate / writers / per_tx * tick  # transactions per tick per writer
    # (run << 32 | seq) -> time just before COMMIT; int keys, float values: a dict the
    # garbage collector does not track (see Arrivals).
    committed: dict[int, float] = {}
    sent = 0

    async def writer(w: int) -> None:
        nonlocal sent
        rng = random.Random(w)
        owed = 0.0
        next_tick = time.perf_counter()
        events = [NewEvent(type=t.AGENT_THINKING, agent="bench", payload={"i": i})
                  for i in range(per_tx)]
        while time.perf_counter() < deadline:
            owed += per_writer
            while owed >= 1:
                owed -= 1
                run = rng.randrange(len(runs))
                async with db.tenant_connection(tenant_id) as conn:
                    measured = time.perf_counter() >= measure_from
                    seqs = await append(conn, tenant_id=tenant_id, run_id=runs[run],
                                        events=events)
                    before_commit = time.time()
                if measured:
                    sent += per_tx
                    for seq in seqs:
                        committed[run << 32 | seq] = before_commit
            next_tick += tick
            await asyncio.sleep(max(0.0, next_tick - time.perf_counter()))

    measure_from = time.perf_counter() + WARMUP  # pools grow, statements get prepared
    deadline = measure_from + args.seconds

    async def server_cpu() -> float | None:
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        start = cpu_seconds(server_pid)
        await asyncio.sleep(max(0.0, deadline - time.perf_counter()))
        end = cpu_seconds(server_pid)
        return None if start is None or end is None else end - start

    cpu = asyncio.create_task(server_cpu())
    await asyncio.gather(*(writer(w) for w in range(writers)))
    elapsed = time.perf_counter() - measure_from
    out, _ = await proc.communicate()
    report = json.loads(out.decode().strip().splitlines()[-1])
    got = list(zip(report["subs"], report["ids"], report["times"], strict=True))
    lat = sorted(at - committed[key] for sub, seq, at in got
                 if (key := (sub % len(runs)) << 32 | seq) in committed)
    # Each subscriber follows a fresh run from its start: it must see 1, 2, 3, ...
    ids: dict[int, list[int]] = {}
    for sub, seq, _ in got:
        ids.setdefault(sub, []).append(seq)
    in_order = all(seqs == list(range(1, len(seqs) + 1)) for seqs in ids.values())
    server = await cpu
    return {
        "rate": sent / elapsed,
        "delivered": len(lat),
        "expected": sent * args.subscribers / len(runs),
        "p50": lat[len(lat) // 2] * 1000 if lat else float("nan"),
        "p99": lat[int(len(lat) * 0.99)] * 1000 if lat else float("nan"),
        "max": lat[-1] * 1000 if lat else float("nan"),
        "in_order": in_order,
        "server_cpu": None if server is None else server / args.seconds,
        "client_cpu": report["cpu"] / listen,
    }


async def main(args: argparse.Namespace) -> None:
    home, pg_port, server = embedded.start("ap-events-bench-", SERVER)
    api = None
    try:
        conf = settings(home, pg_port)
        db, tenant_id, key = await setup(conf)
        runs = await make_runs(db, tenant_id, 500)
        owner = db.endpoints.owner
        if args.only in (None, "append"):
            # Warm up each path once (caches, prepared statements), then measure in
            # alternating rounds.
            await bench_agentplane(db, tenant_id, runs, args.batch * 4, args.batch)
            await bench_copy(owner, tenant_id, runs, args.batch * 4, args.batch)
            aps, cps = [], []
            for _ in range(ROUNDS):
                aps.append(await bench_agentplane(db, tenant_id, runs, args.events, args.batch))
                cps.append(await bench_copy(owner, tenant_id, runs, args.events, args.batch))
            ap, cp = statistics.median(aps), statistics.median(cps)
            one = await bench_one_row(owner, tenant_id, runs, min(args.events, 20_000))
            print(f"\nappend throughput ({args.events} events, batches of {args.batch}, "
                  f"median of {ROUNDS} alternating rounds; one-row: 1 run of up to 20000)")
            print(f"{'method':<44}{'events/s':>12}{'ratio':>10}")
            print(f"{'agentplane append (batched, numbered, RLS)':<44}{ap:>12,.0f}{'1.00':>10}")
            print(f"{'raw COPY into a bare table':<44}{cp:>12,.0f}{cp / ap:>10.2f}")
            print(f"{'one INSERT per event (autocommit)':<44}{one:>12,.0f}{one / ap:>10.2f}")
            print(f"agentplane / COPY = {ap / cp:.0%} (goal >= 50%); "
                  f"agentplane / one-row = {ap / one:.1f}x")
        if args.only == "append":
            await db.close()
            return
        port = 56000 + (uuid.uuid4().int % 4000)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
        api = await asyncio.create_subprocess_exec(
            *SELF, "--serve", str(home), str(pg_port), str(port), env=env, cwd=ROOT)
        url = f"http://127.0.0.1:{port}"
        async with asyncio.timeout(60):
            while True:
                try:
                    async with httpx.AsyncClient() as c:
                        if (await c.get(url + "/ready")).status_code == 200:
                            break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        print(f"\nfan-out: {args.subscribers} SSE subscribers over HTTP, events appended at "
              f"{args.rate}/s for {args.seconds:g}s (4 per transaction); latency from commit "
              "to client")
        print(f"{'runs':>6}{'subs/run':>10}{'appended/s':>12}{'delivered':>11}{'p50 ms':>9}"
              f"{'p99 ms':>9}{'max ms':>9}{'in order':>10}{'server':>8}{'client':>8}")
        for n_runs in args.runs:
            fresh = await make_runs(db, tenant_id, n_runs)
            fan = await bench_fanout(db, tenant_id, key, fresh, args, url, api.pid)
            server_cpu = "-" if fan["server_cpu"] is None else f"{fan['server_cpu']:.0%}"
            print(f"{n_runs:>6}{args.subscribers / n_runs:>10g}{fan['rate']:>12,.0f}"
                  f"{fan['delivered']:>11,}{fan['p50']:>9.1f}{fan['p99']:>9.1f}"
                  f"{fan['max']:>9.1f}{'yes' if fan['in_order'] else 'NO':>10}"
                  f"{server_cpu:>8}{fan['client_cpu']:>8.0%}")
            if fan["delivered"] < fan["expected"]:
                print(f"  note: {fan['expected'] - fan['delivered']:,.0f} of "
                      f"{fan['expected']:,.0f} deliveries still in flight when the "
                      "subscribers stopped")
        print("goal: p99 < 100 ms with 500 subscribers")
        await db.close()
    finally:
        if api is not None and api.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                api.terminate()
            await api.wait()
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        serve(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        sys.exit(0)
    if len(sys.argv) == 7 and sys.argv[1] == "--subscribe":
        asyncio.run(subscribe(sys.argv[2], sys.argv[3], sys.argv[4].split(","),
                              int(sys.argv[5]), float(sys.argv[6])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--runs", type=lambda v: [int(n) for n in v.split(",")],
                        default=[500, 50], help="runs followed, one table row each")
    parser.add_argument("--rate", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--only", choices=["append", "fanout"])
    asyncio.run(main(parser.parse_args()))
