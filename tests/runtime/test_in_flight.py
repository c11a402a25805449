"""A task whose LLM call is out, against a provider that answers slowly: followers see the
call go out while it is out, and cancelling the run stops the call, gives its reservation back
and appends nothing after the run's terminal event."""

from __future__ import annotations

import asyncio

from tests.llm.vendors import KEY, OpenAIHandler, serve
from tests.runtime.helpers import add_agents, agent, tenant, worker

SLOW_S = 4.0


async def wait_for(predicate, timeout: float = 10.0, what: str = "condition"):  # noqa: ASYNC109
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        found = await predicate()
        if found:
            return found
        assert loop.time() < end, f"no {what} after {timeout}s"
        await asyncio.sleep(0.05)


async def events_of(client, ctx, run_id: str) -> list[dict]:
    r = await client.get(f"/v1/runs/{run_id}/events", params={"limit": 1000}, headers=ctx.headers)
    assert r.status_code == 200, r.text
    return r.json()["events"]


async def test_a_slow_call_is_seen_going_out_and_cancel_stops_it(db, settings, client):
    ctx = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        vendor.delay = SLOW_S
        r = await client.post(
            "/v1/llm/providers",
            headers=ctx.headers,
            json={"name": "slow", "type": "openai_compatible", "base_url": vendor.url + "/v1",
                  "api_key": KEY, "config": {"max_retries": 0, "timeout": 30}},
        )
        assert r.status_code == 201, r.text
        await add_agents(client, ctx, agent("sloth", model="slow/gpt-4o"))
        async with worker(db, settings):
            r = await client.post("/v1/runs", json={"query": "hi", "agent": "sloth"},
                                  headers=ctx.headers)
            assert r.status_code == 201, r.text
            run_id = r.json()["id"]
            await wait_for(lambda: asyncio.sleep(0, bool(vendor.requests)), what="request")
            loop = asyncio.get_running_loop()
            sent = loop.time()

            # While the call is out, its start and the agent's states are in the log.
            async def started():
                seen = await events_of(client, ctx, run_id)
                return seen if any(e["type"] == "llm.call_started" for e in seen) else None

            seen = await started() or await wait_for(started, timeout=2, what="call_started")
            assert loop.time() - sent < SLOW_S / 2  # long before the answer
            moves = [e for e in seen if e["type"] == "agent.state_changed"]
            assert moves and moves[-1]["payload"]["to"] == "EXECUTING"
            assert not any(e["type"] == "llm.call_completed" for e in seen)

            r = await client.post(f"/v1/runs/{run_id}/cancel", headers=ctx.headers)
            assert r.status_code == 200 and r.json()["status"] == "cancelled"

            async def job_stopped():
                async with db.admin_connection() as conn:
                    cur = await conn.execute(
                        "SELECT status FROM jobs WHERE tenant_id = %s AND payload->>'run_id' = %s",
                        [ctx.tenant_id, run_id],
                    )
                    row = await cur.fetchone()
                return row if row and row["status"] == "cancelled" else None

            await wait_for(job_stopped, timeout=SLOW_S / 2, what="cancelled job")
            assert loop.time() - sent < SLOW_S  # stopped, not waited out
            async with db.admin_connection() as conn:
                cur = await conn.execute(
                    "SELECT status, error FROM llm_calls WHERE run_id = %s", [run_id])
                calls = await cur.fetchall()
                cur = await conn.execute(
                    "SELECT tokens_reserved FROM tenants WHERE id = %s", [ctx.tenant_id])
                reserved = (await cur.fetchone())["tokens_reserved"]
                cur = await conn.execute(
                    "SELECT count(*) AS n FROM budget_reservations WHERE tenant_id = %s",
                    [ctx.tenant_id])
                reservations = (await cur.fetchone())["n"]
            assert calls == [{"status": "cancelled", "error": "cancelled by the caller"}]
            assert reserved == 0 and reservations == 0
            # The answer would have come by now; nothing follows the terminal event.
            await asyncio.sleep(SLOW_S - (loop.time() - sent) + 0.5)
    final = await events_of(client, ctx, run_id)
    assert final[-1]["type"] == "run.cancelled"
    assert [e["seq"] for e in final] == list(range(1, len(final) + 1))
    assert not any(e["type"] in ("llm.call_completed", "task.failed") for e in final)


async def test_the_database_appends_nothing_after_a_terminal_event(db, client):
    """Whoever writes: a late batch for an ended run is not stored, nor what follows the
    terminal event in its own batch; a retried failed run's run.resumed opens the log."""
    from agentplane.events import append
    from agentplane.events.models import NewEvent

    ctx = await tenant(db)
    r = await client.post("/v1/runs", json={"query": "hi"}, headers=ctx.headers)
    run_id = r.json()["id"]
    async with db.tenant_connection(ctx.tenant_id) as conn:
        seqs = await append(conn, tenant_id=ctx.tenant_id, run_id=run_id, events=[
            NewEvent(type="task.started"), NewEvent(type="run.failed"),
            NewEvent(type="task.completed")])
        assert seqs == [1, 2]
        late = await append(conn, tenant_id=ctx.tenant_id, run_id=run_id,
                            events=[NewEvent(type="llm.call_started")])
        assert late == []
        again = await append(conn, tenant_id=ctx.tenant_id, run_id=run_id, events=[
            NewEvent(type="run.resumed"), NewEvent(type="task.retrying")])
        assert again == [3, 4]
    types = [e["type"] for e in await events_of(client, ctx, run_id)]
    assert types == ["task.started", "run.failed", "run.resumed", "task.retrying"]
