"""The cache of verified API keys and the leased rate-limit allowance, across two app
instances (each with its own pools, cache and listener: two server processes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from agentplane.app import create_app
from agentplane.auth import cache as keycache
from agentplane.db.pool import Database
from tests.conftest import make_tenant, superuser_conn
from tests.support.dates import clear_of

BOUND_SECONDS = 2.0  # a change must reach the other instance within this


@pytest.fixture
async def other(settings, db: Database) -> AsyncIterator[tuple[httpx.AsyncClient, Database]]:
    other_db = Database(settings, db.endpoints)
    await other_db.open()
    transport = httpx.ASGITransport(app=create_app(settings, db=other_db))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as c:
            yield c, other_db
    finally:
        await keycache.close(other_db)
        await other_db.close()


async def listening(db: Database) -> keycache.KeyCache:
    cache = keycache.cache_for(db)
    for _ in range(200):
        if cache.listening:
            return cache
        await asyncio.sleep(0.01)
    raise AssertionError("the auth listener did not start")


async def until_status(c: httpx.AsyncClient, headers: dict[str, str], status: int) -> float:
    """Seconds until /me answers `status` (fails after BOUND_SECONDS)."""
    started = time.monotonic()
    while True:
        r = await c.get("/me", headers=headers)
        if r.status_code == status:
            return time.monotonic() - started
        assert time.monotonic() - started < BOUND_SECONDS, r.text
        await asyncio.sleep(0.005)


async def test_revoke_in_one_instance_stops_the_key_in_another(client, db, other) -> None:
    other_client, other_db = other
    ctx = await make_tenant(db)
    cache = await listening(other_db)
    assert (await other_client.get("/me", headers=ctx.headers)).status_code == 200
    assert cache.entries, "the key should now be served from the other instance's cache"
    r = await client.delete(f"/v1/api-keys/{ctx.api_key_id}", headers=ctx.headers)
    assert r.status_code == 200
    assert await until_status(other_client, ctx.headers, 401) < BOUND_SECONDS
    assert (await client.get("/me", headers=ctx.headers)).status_code == 401  # here: at once


async def test_demotion_and_removal_reach_the_other_instance(db, other) -> None:
    """Changed in plain SQL (as an administrator might): only the notification tells."""
    other_client, other_db = other
    ctx = await make_tenant(db, role="admin")
    await listening(other_db)
    r = await other_client.get("/me", headers=ctx.headers)
    assert r.status_code == 200 and r.json()["role"] == "admin"
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE memberships SET role = 'viewer' WHERE user_id = %s", [ctx.user_id]
        )
    started = time.monotonic()
    while (await other_client.get("/me", headers=ctx.headers)).json()["role"] != "viewer":
        assert time.monotonic() - started < BOUND_SECONDS
        await asyncio.sleep(0.005)
    async with db.admin_connection() as conn:
        await conn.execute("DELETE FROM memberships WHERE user_id = %s", [ctx.user_id])
    assert await until_status(other_client, ctx.headers, 401) < BOUND_SECONDS


async def test_rate_limits_stay_exact_across_instances(client, db, other) -> None:
    """A limit leased in blocks is never exceeded; at most one block per instance
    (less one) is left unspent."""
    other_client, other_db = other
    await clear_of(db, "hour", seconds=120)  # limits count in hourly windows
    ctx = await make_tenant(db)
    await listening(other_db)
    limit = 1000  # block = limit / 200 = 5
    r = await client.post(
        "/v1/api-keys", headers=ctx.headers, json={"name": "l", "rate_limit_per_hour": limit}
    )
    key = {"Authorization": f"Bearer {r.json()['key']}"}
    served = 0
    for i in range(limit + 50):
        r = await (client if i % 3 else other_client).get("/me", headers=key)
        assert r.status_code in (200, 429)
        served += r.status_code == 200
    assert limit - 2 * (5 - 1) <= served <= limit
    assert r.status_code == 429 and r.headers["RateLimit-Remaining"] == "0"
    assert 0 < int(r.headers["Retry-After"]) <= 3600


async def test_the_cache_is_flushed_when_the_listener_reconnects(client, db, other, pg_server):
    other_client, other_db = other
    ctx = await make_tenant(db)
    cache = await listening(other_db)
    assert (await other_client.get("/me", headers=ctx.headers)).status_code == 200
    assert cache.entries
    pid = cache.listener_pid
    # Revoked while the other instance hears nothing: its listener is cut first.
    with superuser_conn(pg_server) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", [pid])
    started = time.monotonic()
    while cache.listening and cache.listener_pid == pid:
        assert time.monotonic() - started < BOUND_SECONDS
        await asyncio.sleep(0.005)
    assert not cache.entries
    async with db.admin_connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET is_active = false, revoked_at = now() WHERE id = %s",
            [ctx.api_key_id],
        )
    assert (await other_client.get("/me", headers=ctx.headers)).status_code == 401
    started = time.monotonic()
    while not cache.listening:
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.02)
    assert cache.listener_pid != pid
    assert (await other_client.get("/me", headers=ctx.headers)).status_code == 401
