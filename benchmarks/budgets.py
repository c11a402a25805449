"""Budget enforcement benchmark: LLM calls/s through reserve -> call -> journal -> settle,
with 32 concurrent callers on the offline provider, side by side with the same calls
without budgets (the ratio is what enforcement costs).

    python -m benchmarks.budgets [--calls 4000] [--callers 32] [--rounds 3]

One embedded PostgreSQL. Every caller has its own session (budget: exactly
`--per-session` calls) and all share the tenant's monthly limit, the row every call
locks. Callers try more calls than their session admits, so each run also checks
that no budget was overspent. With 32 callers the p50 difference is mostly queueing
(Little's law: callers / throughput); the per-call overhead is measured with one
caller, calls with and without budgets alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
import uuid
from pathlib import Path

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database
from agentplane.errors import BudgetExceeded
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext
from agentplane.llm.tokens import estimate_prompt
from benchmarks import embedded

SERVER = {"max_connections": "200", "shared_buffers": "256MB"}
MESSAGES = [{"role": "user", "content": "Summarise the incident report in two sentences."}]
MAX_TOKENS = 16
PER_CALL = estimate_prompt(MESSAGES) + MAX_TOKENS  # offline answers use all of max_tokens


async def setup(home: Path, port: int) -> tuple[Database, Settings]:
    conf = Settings(
        home=home,
        embedded_listen="127.0.0.1",
        embedded_port=port,
        database_name="bench_budgets",
        env="test",
        pool_min_size=40,
        pool_max_size=40,
    )
    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    db = Database(conf, endpoints)
    await db.open()
    return db, conf


async def new_tenant(db: Database, limit: int) -> uuid.UUID:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "INSERT INTO tenants (name, slug, token_limit) VALUES ('bench', %s, %s) RETURNING id",
            [f"bench-{uuid.uuid4().hex[:10]}", limit],
        )
        return (await cur.fetchone())["id"]


async def new_sessions(db: Database, tenant: uuid.UUID, n: int, budget: int) -> list[uuid.UUID]:
    async with db.tenant_connection(tenant) as conn:
        cur = await conn.execute(
            "INSERT INTO sessions (tenant_id, token_budget)"
            " SELECT %s, %s FROM generate_series(1, %s) RETURNING id",
            [tenant, budget, n],
        )
        return [r["id"] for r in await cur.fetchall()]


async def run(llm: LLM, db: Database, calls: int, callers: int, enforce: bool) -> dict:
    per_caller = calls // callers
    admitted_each = per_caller - 2 if enforce else per_caller  # 2 refusals per session
    tenant = await new_tenant(db, limit=10**12)
    sessions = await new_sessions(db, tenant, callers, admitted_each * PER_CALL)
    request = ChatRequest(messages=MESSAGES, max_tokens=MAX_TOKENS)
    latencies: list[float] = []
    ok = refused = 0

    async def caller(session_id: uuid.UUID) -> None:
        nonlocal ok, refused
        ctx = CallContext(tenant_id=tenant, session_id=session_id)
        for _ in range(per_caller):
            t0 = time.perf_counter()
            try:
                await llm.complete(ctx, request, enforce_budgets=enforce)
                latencies.append(time.perf_counter() - t0)
                ok += 1
            except BudgetExceeded:
                refused += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(caller(s) for s in sessions))
    elapsed = time.perf_counter() - t0
    overspent = 0
    if enforce:
        async with db.admin_connection() as conn:
            cur = await conn.execute(
                "SELECT count(*) FILTER (WHERE tokens_used > token_budget OR tokens_reserved <> 0)"
                " AS bad, sum(tokens_used) AS used FROM sessions WHERE tenant_id = %s",
                [tenant],
            )
            check = await cur.fetchone()
        overspent = check["bad"]
        assert ok == admitted_each * callers, f"admitted {ok}, expected {admitted_each * callers}"
        assert check["used"] == ok * PER_CALL
    ms = sorted(x * 1000 for x in latencies)
    return {
        "rate": ok / elapsed,
        "p50": statistics.median(ms),
        "p99": ms[max(0, int(len(ms) * 0.99) - 1)],
        "ok": ok,
        "refused": refused,
        "overspent": overspent,
    }


async def single_caller(llm: LLM, db: Database, n: int = 400) -> tuple[float, float]:
    """p50 of one call (ms) with one caller and no contention: without, with budgets."""
    tenant = await new_tenant(db, limit=10**12)
    (session,) = await new_sessions(db, tenant, 1, 10**12)
    ctx = CallContext(tenant_id=tenant, session_id=session)
    request = ChatRequest(messages=MESSAGES, max_tokens=MAX_TOKENS)
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(2 * n):  # alternate, so drift in background load hits both
        enforce = bool(i % 2)
        t0 = time.perf_counter()
        await llm.complete(ctx, request, enforce_budgets=enforce)
        times[enforce].append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[False]), statistics.median(times[True])


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)
    home, port, server = embedded.start("ap-budget-bench-", SERVER)
    try:
        db, conf = await setup(home, port)
        llm = LLM(db, conf)
        await run(llm, db, args.callers * 10, args.callers, True)  # warm up
        results: dict[bool, list[dict]] = {True: [], False: []}
        for _ in range(args.rounds):  # interleaved, so background load hits both alike
            for enforce in (False, True):
                results[enforce].append(await run(llm, db, args.calls, args.callers, enforce))
        alone_off, alone_on = await single_caller(llm, db)
        await db.close()
    finally:
        server.stop()

    def best(rs: list[dict]) -> dict:
        return max(rs, key=lambda r: r["rate"])

    off, on = best(results[False]), best(results[True])
    p50_off = statistics.median(r["p50"] for r in results[False])
    p50_on = statistics.median(r["p50"] for r in results[True])
    overspent = sum(r["overspent"] for r in results[True])
    print(
        f"\n{args.callers} concurrent callers, {args.calls} calls per run, best of "
        f"{args.rounds} runs (p50: median of runs), offline provider\n"
    )
    print(f"{'path':<28}{'calls/s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    print(f"{'without budgets':<28}{off['rate']:>10.0f}{p50_off:>10.2f}{off['p99']:>10.2f}")
    print(
        f"{'with budgets (reserve/settle)':<28}{on['rate']:>10.0f}{p50_on:>10.2f}{on['p99']:>10.2f}"
    )
    print(f"{'ratio (with / without)':<28}{on['rate'] / off['rate']:>10.2f}")
    print(f"{'p50 difference, 32 callers':<28}{'':>10}{p50_on - p50_off:>10.2f}  (queueing incl.)")
    # What each call adds to the work of the whole system: 1/rate with budgets, less without.
    added = 1000 / on["rate"] - 1000 / off["rate"]
    print(f"{'added per call, 32 callers':<28}{'':>10}{added:>10.2f}  (1000/rate with - without)")
    print(f"{'1 caller, without budgets':<28}{'':>10}{alone_off:>10.2f}")
    print(f"{'1 caller, with budgets':<28}{'':>10}{alone_on:>10.2f}")
    print(f"{'p50 overhead per call':<28}{'':>10}{alone_on - alone_off:>10.2f}  (1 caller)")
    runs = len(results[True])
    print(
        f"\nrefused as budgeted: {on['refused']} per run; overspent budgets in "
        f"{runs} runs: {overspent}  (goal: < 1.5 ms p50 overhead, no overspend)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
