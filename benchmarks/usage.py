"""Usage analytics at scale: reports and the budget check from rollups beside raw rows.

    python -m benchmarks.usage [--rows 10000000] [--tenants 100] [--users 1000] [--repeat 20]

One embedded PostgreSQL. Loads ROWS usage records spread over 12 months, TENANTS tenants
and USERS users with COPY through the real table (partitions, indexes, the rollup
triggers), and reports the load rate. Then times, as the application role under
row-level security, each answer two ways: agentplane's (the daily rollup; the tenant's
counter row for the budget check) and the same answer from raw rows with the best index
(the peers' way). Times the other system tasks over the full data (partitions ahead,
billing period close, view refresh). Finally retires the oldest month by dropping its
partition and, for comparison, deletes the next month's rows with DELETE, showing time,
dead tuples and the bytes each gives back. The server's directory is removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import random
import shutil
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from agentplane import clock
from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database
from agentplane.ops import service as ops
from agentplane.usage import reports
from benchmarks import embedded

SERVER = {"shared_buffers": "512MB", "max_wal_size": "4GB", "maintenance_work_mem": "256MB",
          "work_mem": "32MB"}
MODELS = [("openai", "gpt-4o"), ("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"),
          ("openai", "o4-mini"), ("anthropic", "claude-sonnet-4-0"),
          ("anthropic", "claude-3-5-haiku-latest"), ("anthropic", "claude-opus-4-0"),
          ("openai", "gpt-4.1-nano")]
CHUNK = 250_000
COLUMNS = ("tenant_id, created_at, llm_call_id, user_id, api_key_id, agent_id, provider, model, "
           "prompt_tokens, completion_tokens, cached_tokens, cost_usd, cost_source, latency_ms")


async def setup(home: Path, port: int) -> Database:
    conf = Settings(home=home, embedded_listen="127.0.0.1", embedded_port=port,
                    database_name="bench_usage", env="test", pool_min_size=2, pool_max_size=4,
                    log_level="WARNING")
    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    db = Database(conf, endpoints)
    await db.open()
    return db


def chunks(rows: int, tenant_ids: list, people: dict, agents: dict, span: float,
           start: datetime):
    """COPY text of `rows` records in time order (as a ledger fills), CHUNK rows at a time."""
    rng = random.Random(7)
    rand, bits = rng.randrange, rng.getrandbits
    per_tenant = len(next(iter(people.values())))
    tenants = [str(t) for t in tenant_ids]
    who = {str(t): [f"{u}\t{k}" for u, k in people[t]] for t in tenant_ids}
    bots = {str(t): [str(a) for a in agents[t]] for t in tenant_ids}
    models = [f"{p}\t{m}" for p, m in MODELS]
    step = span / rows
    t0 = start.timestamp()
    day_of: dict[int, str] = {}
    done = 0
    while done < rows:
        n = min(CHUNK, rows - done)
        lines = []
        for i in range(done, done + n):
            t = tenants[rand(len(tenants))]
            p, c = rand(50, 4000), rand(10, 800)
            day, sec = divmod(int(t0 + i * step), 86400)
            if day not in day_of:
                day_of[day] = datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%d")
            h, rem = divmod(sec, 3600)
            lines.append(
                f"{t}\t{day_of[day]} {h:02d}:{rem // 60:02d}:{rem % 60:02d}+00\t{bits(128):032x}"
                f"\t{who[t][rand(per_tenant)]}\t{bots[t][rand(5)]}\t{models[rand(len(models))]}"
                f"\t{p}\t{c}\t{p // 4}\t{(p * 2.5 + c * 10) / 1e6:.10f}\tprice\t"
                f"{rand(100, 3000)}\n")
        done += n
        yield n, "".join(lines).encode()


async def copy_chunks(db: Database, source, report: bool) -> float:
    """COPY every chunk (one transaction each); rows per second of COPY (text made before)."""
    spent, done = 0.0, 0
    for n, data in source:
        t0 = time.perf_counter()
        async with db.admin_connection() as conn, conn.cursor().copy(
                f"COPY usage_records ({COLUMNS}) FROM STDIN") as copy:
            await copy.write(data)
        spent += time.perf_counter() - t0
        done += n
        if report and done % (CHUNK * 8) == 0:
            print(f"  loaded {done:,} rows", flush=True)
    return done / spent


async def load(db: Database, rows: int, tenants: int, users: int) -> tuple[list, dict, dict]:
    async with db.admin_connection() as conn:
        await conn.execute(
            "SELECT usage_records_create_partition(now() - make_interval(months => m)) "
            "FROM generate_series(0, 12) AS m")
        cur = await conn.execute(
            "INSERT INTO tenants (name, slug, token_limit) "
            "SELECT 'bench ' || i, 'bench-' || i, 1000000000000 "
            "FROM generate_series(1, %s) AS i RETURNING id", [tenants])
        tenant_ids = [r["id"] for r in await cur.fetchall()]
    rng = random.Random(11)
    per_tenant = max(users // tenants, 1)
    people = {t: [(uuid.UUID(int=rng.getrandbits(128), version=4),
                   uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(per_tenant)]
              for t in tenant_ids}
    agents = {t: [uuid.UUID(int=rng.getrandbits(128), version=4) for _ in range(5)]
              for t in tenant_ids}
    now = datetime.now(UTC)
    span = 365 * 86400.0
    start = now - timedelta(seconds=span)
    rates: dict[str, float] = {}

    # Generating the text alone, then a sample loaded without the rollup triggers (rolled
    # back), so the table separates Python, COPY into indexed partitions, and the triggers.
    sample = max(min(rows // 10, 500_000), 1)
    t0 = time.perf_counter()
    for _ in chunks(sample, tenant_ids, people, agents, span / 10, start):
        pass
    rates["generate COPY text only"] = sample / (time.perf_counter() - t0)
    async with db.owner_pool.connection() as conn:
        await conn.execute("ALTER TABLE usage_records DISABLE TRIGGER usage_records_rollup")
        await conn.commit()
    try:
        rates["COPY without rollup triggers (sample)"] = await copy_chunks(
            db, chunks(sample, tenant_ids, people, agents, span / 10, start), False)
    finally:
        async with db.owner_pool.connection() as conn:
            await conn.execute("ALTER TABLE usage_records ENABLE TRIGGER usage_records_rollup")
            await conn.execute("TRUNCATE usage_records")
            await conn.commit()
    rates["COPY with rollup triggers (all rows)"] = await copy_chunks(
        db, chunks(rows, tenant_ids, people, agents, span, start), True)
    async with db.owner_pool.connection() as conn:
        await conn.set_autocommit(True)
        await conn.execute("VACUUM ANALYZE usage_records")
        await conn.execute("VACUUM ANALYZE usage_daily")
        await conn.set_autocommit(False)
    return tenant_ids, people, rates


def ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(db: Database, tenant: uuid.UUID, fn, repeat: int) -> tuple[float, object]:
    out, samples = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        async with db.tenant_connection(tenant) as conn:
            out = await fn(conn)
        samples.append(time.perf_counter() - t0)
    return ms(samples), out


RAW_MODEL = """
SELECT provider || '/' || model AS key, sum(cost_usd) AS cost, sum(total_tokens) AS tokens
FROM usage_records WHERE tenant_id = app_current_tenant() AND created_at >= %s
GROUP BY 1 ORDER BY 1"""
RAW_USER = """
SELECT usage_utc_day(created_at) AS day, sum(cost_usd) AS cost, sum(total_tokens) AS tokens
FROM usage_records WHERE tenant_id = app_current_tenant() AND user_id = %s AND created_at >= %s
GROUP BY 1 ORDER BY 1"""
RAW_BUDGET = """
SELECT coalesce(sum(total_tokens), 0) AS used FROM usage_records
WHERE tenant_id = app_current_tenant() AND created_at >= date_trunc('month', now())"""


async def measure(db: Database, tenant: uuid.UUID, user: uuid.UUID, repeat: int) -> list[tuple]:
    since = clock.today() - timedelta(days=29)
    since_ts = datetime.combine(since, datetime.min.time(), UTC)

    async def rollup_model(conn):
        return await reports.report(conn, period="month", by="model", since=str(since))

    async def raw_model(conn):
        return await (await conn.execute(RAW_MODEL, [since_ts])).fetchall()

    async def rollup_user(conn):
        return await reports.report(conn, period="day", by="user", value=str(user),
                                    since=str(since))

    async def raw_user(conn):
        return await (await conn.execute(RAW_USER, [user, since_ts])).fetchall()

    async def raw_budget(conn):
        return await (await conn.execute(RAW_BUDGET)).fetchone()

    rows = []
    for name, ours, theirs in (("30-day cost per model, one tenant", rollup_model, raw_model),
                               ("per-day report, one user (30 days)", rollup_user, raw_user)):
        a, got = await timed(db, tenant, ours, repeat)
        b, want = await timed(db, tenant, theirs, max(repeat // 4, 3))
        ours_cost = sum(r.cost_usd for r in got.rows)
        assert abs(ours_cost - sum(r["cost"] for r in want)) < 1e-6, name
        rows.append((name, a, b))
    # The budget check: agentplane reserves against counter rows (one statement); the raw
    # way sums this month's records.
    samples = []
    for _ in range(repeat):
        async with db.autocommit_connection() as conn:
            t0 = time.perf_counter()
            cur = await conn.execute(
                "SELECT usage_reserve(%s, NULL, NULL, 100, make_interval(secs => 60), '1s') AS id",
                [tenant])
            rid = (await cur.fetchone())["id"]
            samples.append(time.perf_counter() - t0)
            await conn.execute("SELECT usage_settle(%s, %s)", [tenant, rid])
    b, _ = await timed(db, tenant, raw_budget, max(repeat // 4, 3))
    rows.append(("budget check before a call", ms(samples), b))
    return rows


async def maintenance(db: Database) -> list[tuple[str, float]]:
    """The system tasks other than retention, as a worker runs them, over the full data."""
    out = []
    for name, fn in (("partitions ahead (3 months)", ops.ensure_partitions),
                     ("close ended billing periods", ops.close_billing_periods),
                     ("refresh materialized views", ops.refresh_views)):
        t0 = time.perf_counter()
        await fn(db)
        out.append((name, (time.perf_counter() - t0) * 1000))
    return out


async def dead_tuples(db: Database, partitions: list[str]) -> int:
    """n_dead_tup summed over `partitions`, once the statistics show the last write."""
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT coalesce(sum(n_dead_tup), 0)::bigint AS dead FROM pg_stat_user_tables "
            "WHERE schemaname = 'public' AND relname = ANY(%s)", [partitions])
        return (await cur.fetchone())["dead"]


async def table_bytes(db: Database) -> int:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT sum(pg_total_relation_size(relid))::bigint AS b "
            "FROM pg_partition_tree('usage_records')")
        return (await cur.fetchone())["b"]


async def retention(db: Database) -> list[tuple]:
    """Retire the oldest month by policy (partition drop) and, for comparison, the next
    month with DELETE. Statistics are flushed by the writing session itself
    (pg_stat_force_next_flush) before they are read, so the dead tuples are the real ones."""
    parts = (await ops.partitions(db))["usage_records"]
    oldest, second = parts[0], parts[1]
    rest = [p["partition"] for p in parts[1:]]
    async with db.admin_connection() as conn:
        cur = await conn.execute(f"SELECT count(*) AS n FROM {oldest['partition']}")
        n_oldest = (await cur.fetchone())["n"]
    days = (datetime.now(UTC) - oldest["range_to"]).days
    await ops.set_policy(db, "usage_records", days, "delete", True)
    await ops.set_policy(db, "events", 36500, "delete", False)
    await ops.set_policy(db, "llm_calls", 36500, "delete", False)
    bytes_before = await table_bytes(db)
    t0 = time.perf_counter()
    done = await ops.run_retention(db)
    drop = time.perf_counter() - t0
    assert done["usage_records"]["partitions"] == [oldest["partition"]], done
    bytes_after_drop = await table_bytes(db)
    await asyncio.sleep(1.5)  # any pending statistics of other sessions are flushed by now
    dead_after_drop = await dead_tuples(db, rest)

    t0 = time.perf_counter()
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "DELETE FROM usage_records WHERE created_at >= %s AND created_at < %s",
            [second["range_from"], second["range_to"]])
        n_second = cur.rowcount
        await conn.execute("SELECT pg_stat_force_next_flush()")
    delete = time.perf_counter() - t0
    bytes_after_delete = await table_bytes(db)
    dead_after_delete = 0
    for _ in range(50):  # the session flushes when it goes idle, i.e. right after COMMIT
        dead_after_delete = await dead_tuples(db, [second["partition"]])
        if dead_after_delete:
            break
        await asyncio.sleep(0.1)
    return [("retire a month: drop partition", n_oldest, drop * 1000, dead_after_drop,
             bytes_before - bytes_after_drop),
            ("retire a month: DELETE rows", n_second, delete * 1000, dead_after_delete,
             bytes_after_drop - bytes_after_delete)]


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    home, port, server = embedded.start("ap-usage-bench-", SERVER)
    try:
        db = await setup(home, port)
        tenants, people, rates = await load(db, args.rows, args.tenants, args.users)
        async with db.admin_connection() as conn:
            cur = await conn.execute("SELECT count(*) AS n FROM usage_daily")
            rollup_rows = (await cur.fetchone())["n"]
        tenant = tenants[0]
        results = await measure(db, tenant, people[tenant][0][0], args.repeat)
        upkeep = await maintenance(db)
        retired = await retention(db)
        await db.close()
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

    print(f"\nusage records: {args.rows:,} over 12 months, {args.tenants} tenants, "
          f"{args.users} users; rollup rows: {rollup_rows:,}")
    for what, rate in rates.items():
        print(f"load: {what:<40} {rate:>12,.0f} rows/s")
    print()
    print(f"{'answer':<38} {'rollup ms':>10} {'raw rows ms':>12} {'raw / rollup':>13}")
    for name, a, b in results:
        print(f"{name:<38} {a:>10.2f} {b:>12.2f} {b / a:>12.0f}x")
    print(f"\n{'system task':<38} {'ms':>10}")
    for name, t in upkeep:
        print(f"{name:<38} {t:>10.1f}")
    print(f"\n{'retention':<34} {'rows':>10} {'ms':>10} {'dead tuples after':>18} "
          f"{'bytes freed':>12}")
    for name, n, t, dead, freed in retired:
        print(f"{name:<34} {n:>10,} {t:>10.1f} {dead:>18,} {freed:>12,}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=20)
    asyncio.run(main(parser.parse_args()))
