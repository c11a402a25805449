"""A write that finds no partition for its month is the operator's problem: a 503 naming
the partition's table, logged as an error, nothing written, and the month made so that
the retry succeeds."""

from __future__ import annotations

import logging

import httpx
import pytest

from agentplane.db.pool import Database
from tests.conftest import make_tenant
from tests.usage.helpers import agent_and_run


async def _status(db: Database, run: object) -> str:
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT status FROM runs WHERE id = %s", [run])
        return (await cur.fetchone())["status"]


async def test_a_missing_month_is_a_503_and_is_made_for_the_retry(
    db: Database, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    ctx = await make_tenant(db)
    _, run = await agent_and_run(db, ctx.tenant_id)
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT events_create_partition(now()) AS name")
        month = (await cur.fetchone())["name"]
        await conn.execute(f"DROP TABLE {month}")  # as after an outage longer than the months ahead

    with caplog.at_level(logging.ERROR, logger="agentplane.db"):
        r = await client.post(f"/v1/runs/{run}/pause", headers=ctx.headers)
    assert r.status_code == 503, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"].endswith("/partition-missing") and problem["table"] == "events"
    assert "events" in problem["detail"] and r.headers["retry-after"] == "1"
    assert any("no partition of events" in rec.getMessage() for rec in caplog.records)
    assert await _status(db, run) == "running"  # the event's transaction wrote nothing

    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL AS made", [month])
        assert (await cur.fetchone())["made"] is True
    again = await client.post(f"/v1/runs/{run}/pause", headers=ctx.headers)
    assert again.status_code == 200, again.text
    assert await _status(db, run) == "paused"


async def test_a_usage_record_of_a_month_without_partition(db: Database) -> None:
    from agentplane.errors import PartitionMissing
    from tests.usage.helpers import insert_records, record

    ctx = await make_tenant(db)
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT usage_records_create_partition(now()) AS name, now()")
        month, now = (await cur.fetchone()).values()
        await conn.execute(f"DROP TABLE {month}")
    with pytest.raises(PartitionMissing) as caught:
        async with db.tenant_connection(ctx.tenant_id) as conn:
            await insert_records(conn, [record(at=now)])
    assert caught.value.status == 503 and caught.value.extra["table"] == "usage_records"
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=now)])
        cur = await conn.execute("SELECT count(*) AS n FROM usage_records")
        assert (await cur.fetchone())["n"] == 1
