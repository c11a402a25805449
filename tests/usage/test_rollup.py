"""The daily rollup equals a full recomputation from raw rows, whatever the mix of usage
records, task completions, failures and retries, and however many writers run at once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from agentplane import clock
from agentplane.db.pool import Database
from tests.conftest import make_tenant
from tests.usage.helpers import (
    agent_and_run,
    insert_records,
    record,
    rollup_vs_raw,
    runs_vs_raw,
    tasks_vs_raw,
)


def noon() -> datetime:
    """Noon (UTC) of the day the example runs on, taken when it runs."""
    return clock.now().replace(hour=12, minute=0, second=0, microsecond=0)


batch = st.tuples(
    st.just("records"),
    st.lists(
        st.tuples(
            st.integers(0, 40),  # days back (partitions exist only ahead: stay in 2 months)
            st.integers(0, 2),  # user
            st.integers(0, 2),  # API key (2: none)
            st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-0"]),
            st.booleans(),  # cost unknown
            st.integers(0, 5000),
            st.integers(0, 800),
        ),
        min_size=1,
        max_size=6,
    ),
)
task = st.tuples(
    st.just("task"), st.sampled_from(["complete", "fail", "retry", "manual_retry"]),
    st.integers(0, 3000),
)
run_end = st.tuples(
    st.just("run"), st.sampled_from(["complete", "fail", "cancel", "fail_then_complete"]),
)
operations = st.lists(st.one_of(batch, task, run_end), min_size=1, max_size=12)


async def _writer(db: Database, ctx: Any, agent: uuid.UUID, run: uuid.UUID,
                  ops: list[Any], users: list[uuid.UUID]) -> None:
    for op in ops:
        if op[0] == "records":
            async with db.tenant_connection(ctx.tenant_id) as conn:
                await insert_records(conn, [
                    record(at=noon() - timedelta(days=back, minutes=i),
                           user=users[u], key=ctx.api_key_id if k == 0 else None,
                           agent=agent if k != 1 else None, run=run, model=model,
                           prompt=p, completion=c, cached=p // 3,
                           cost=None if unknown else Decimal(p) / 10**6)
                    for i, (back, u, k, model, unknown, p, c) in enumerate(op[1])
                ])
            continue
        async with db.tenant_connection(ctx.tenant_id) as conn:
            if op[0] == "run":
                table, steps = "runs", {
                    "complete": ["completed"], "fail": ["failed"], "cancel": ["cancelled"],
                    "fail_then_complete": ["failed", "running", "completed"],
                }[op[1]]
                ms = 0
                cur = await conn.execute(
                    "INSERT INTO runs (tenant_id, kind, query, status) "
                    "VALUES (app_current_tenant(), 'query', 'q', 'running') RETURNING id")
            else:
                _, outcome, ms = op
                table, steps = "tasks", {
                    "complete": ["completed"],
                    "fail": ["failed"],
                    "retry": ["queued", "running", "completed"],
                    "manual_retry": ["failed", "queued", "running", "completed"],
                }[outcome]
                cur = await conn.execute(
                    "INSERT INTO tasks (tenant_id, run_id, node, agent_id, status, started_at) "
                    "VALUES (app_current_tenant(), %s, %s, %s, 'running', now()) RETURNING id",
                    [run, f"n-{uuid.uuid4().hex[:10]}", agent],
                )
            made = (await cur.fetchone())["id"]
        for status in steps:  # each step its own transaction, as the runtime does
            async with db.tenant_connection(ctx.tenant_id) as conn:
                await conn.execute(
                    f"""UPDATE {table} SET status = %(s)s,
                           completed_at = CASE WHEN %(s)s IN ('completed', 'failed', 'cancelled')
                                               THEN now() END
                           {", duration_ms = %(ms)s" if table == "tasks" else ""}
                       WHERE id = %(id)s""",
                    {"s": status, "ms": ms, "id": made},
                )


@hsettings(max_examples=12, deadline=None,
           suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writers=st.lists(operations, min_size=1, max_size=4))
async def test_rollup_equals_recomputation_from_raw_rows(
    db: Database, writers: list[list[Any]]
) -> None:
    ctx = await make_tenant(db)
    agent, run = await agent_and_run(db, ctx.tenant_id)
    users = [ctx.user_id, None, uuid.uuid4()]
    await asyncio.gather(*(_writer(db, ctx, agent, run, ops, users) for ops in writers))

    rolled, raw = await rollup_vs_raw(db, ctx.tenant_id)
    assert rolled == raw
    rolled_tasks, raw_tasks = await tasks_vs_raw(db, ctx.tenant_id)
    assert rolled_tasks == raw_tasks
    rolled_runs, raw_runs = await runs_vs_raw(db, ctx.tenant_id)
    assert rolled_runs == raw_runs


async def test_concurrent_writers_take_separate_stripes_and_never_wait(db: Database) -> None:
    """Two open transactions of one tenant write usage at once: neither blocks the other
    (each holds its own stripe), and both count."""
    ctx = await make_tenant(db)
    async with db.tenant_connection(ctx.tenant_id) as a, db.tenant_connection(ctx.tenant_id) as b:
        await insert_records(a, [record(at=noon())])
        await asyncio.wait_for(insert_records(b, [record(at=noon())]), timeout=5)
        stripes = set()
        for conn in (a, b):
            cur = await conn.execute("SELECT usage_stripe(app_current_tenant()) AS s")
            stripes.add((await cur.fetchone())["s"])
    assert len(stripes) == 2
    rolled, raw = await rollup_vs_raw(db, ctx.tenant_id)
    assert rolled == raw and raw[-1][3] == 2  # the tenant row of today: 2 calls


async def test_a_batch_of_many_rows_makes_one_row_per_key(db: Database) -> None:
    ctx = await make_tenant(db)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=noon(), user=ctx.user_id) for _ in range(50)])
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT dimension, count(*) AS n, sum(calls) AS calls FROM usage_daily "
            "WHERE tenant_id = %s GROUP BY 1 ORDER BY 1",
            [ctx.tenant_id],
        )
        rows = {r["dimension"]: (r["n"], r["calls"]) for r in await cur.fetchall()}
    assert rows == {"model": (1, 50), "tenant": (1, 50), "user": (1, 50)}


async def test_a_rolled_back_write_leaves_the_rollup_as_it_was(db: Database) -> None:
    ctx = await make_tenant(db)
    agent, run = await agent_and_run(db, ctx.tenant_id)
    committed = [record(at=noon(), user=ctx.user_id, agent=agent, run=run)]
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, committed)
    before, _ = await rollup_vs_raw(db, ctx.tenant_id)

    class Undo(Exception):
        pass

    try:
        async with db.tenant_connection(ctx.tenant_id) as conn:
            await insert_records(conn, [record(at=noon(), user=ctx.user_id, agent=agent,
                                               run=run, prompt=999)] * 3)
            cur = await conn.execute(
                "INSERT INTO tasks (tenant_id, run_id, node, agent_id, status, started_at) "
                "VALUES (app_current_tenant(), %s, 'n', %s, 'running', now()) RETURNING id",
                [run, agent])
            task = (await cur.fetchone())["id"]
            await conn.execute("UPDATE tasks SET status = 'completed', completed_at = now() "
                               "WHERE id = %s", [task])
            raise Undo
    except Undo:
        pass
    after, raw = await rollup_vs_raw(db, ctx.tenant_id)
    assert after == before == raw
    assert await tasks_vs_raw(db, ctx.tenant_id) == ([], [])


async def test_a_failed_run_that_runs_on_counts_once_as_it_ends(db: Database) -> None:
    """A task retried by hand takes a failed run back to running: the failure it had
    counted is taken back, and the run counts once, as what it finally became."""
    ctx = await make_tenant(db)
    _, run = await agent_and_run(db, ctx.tenant_id)
    today = noon()
    yesterday = today - timedelta(days=1)
    for status, at in (("failed", yesterday), ("running", yesterday), ("completed", today)):
        async with db.tenant_connection(ctx.tenant_id) as conn:
            await conn.execute("UPDATE runs SET status = %s, completed_at = %s WHERE id = %s",
                               [status, at, run])
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT day, sum(runs_completed) AS ok, sum(runs_failed) AS failed "
            "FROM usage_daily WHERE tenant_id = %s AND dimension = 'tenant' "
            "GROUP BY day HAVING sum(runs_completed) <> 0 OR sum(runs_failed) <> 0",
            [ctx.tenant_id])
        assert [tuple(r.values()) for r in await cur.fetchall()] == [(today.date(), 1, 0)]
