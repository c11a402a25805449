"""Reliability with real receiving processes: 10,000 messages to an agent whose three
instances run in processes, one killed -9 and restarted again and again; a broadcast to
20 instances, 2 of which die; PostgreSQL restarted mid-stream. Every message takes effect
exactly once (its effect and its ack commit together), none is lost, and those whose
time to live passed are counted as expired and never take effect."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from agentplane.db import endpoints as ep
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database
from agentplane.messages import service
from agentplane.messages.models import Destination, MessageIn
from tests.conftest import TEST_SERVER_SETTINGS, cli_env, free_port, make_settings
from tests.messages.receiver import install_effects
from tests.queue.workers import wait_until

ROOT = Path(__file__).resolve().parents[2]


def start(env: dict[str, str], tenant: uuid.UUID, agent: str, instances: list[uuid.UUID],
          *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tests.messages.receiver", str(tenant), agent,
         ",".join(map(str, instances)), *flags],
        env={**env, "PYTHONPATH": str(ROOT), "AGENTPLANE_LOG_LEVEL": "ERROR"}, cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=10)


async def scalar(db: Database, query: str, *params: object) -> object:
    async with db.admin_connection() as conn:
        cur = await conn.execute(query, list(params))
        return next(iter((await cur.fetchone()).values()))


async def setup(db: Database, agent: str, n: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """A tenant, its agent and `n` instances of it."""
    slug = f"m-{uuid.uuid4().hex[:10]}"
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "INSERT INTO tenants (name, slug) VALUES ('m', %s) RETURNING id", [slug])
        tenant = (await cur.fetchone())["id"]
        cur = await conn.execute(
            "INSERT INTO agents (tenant_id, slug, name, role, model) VALUES (%s, %s, 'A', 'r',"
            " 'offline/offline-1') RETURNING id", [tenant, agent])
        agent_id = (await cur.fetchone())["id"]
        cur = await conn.execute(
            "INSERT INTO agent_instances (tenant_id, agent_id, instance_key, status,"
            " heartbeat_at) SELECT %s, %s, 'i' || g, 'idle', now()"
            " FROM generate_series(1, %s) g RETURNING id", [tenant, agent_id, n])
        return tenant, [r["id"] for r in await cur.fetchall()]


async def send(db: Database, tenant: uuid.UUID, bodies: list[MessageIn]) -> list[uuid.UUID]:
    ids: list[uuid.UUID] = []
    for start_ in range(0, len(bodies), 500):
        async with db.tenant_connection(tenant) as conn:
            ids += list(await service.send(conn, tenant, bodies[start_:start_ + 500]))
    return ids


async def assert_once(db: Database, ids: list[uuid.UUID]) -> None:
    effects = await scalar(db, "SELECT count(*) FROM message_effects WHERE message_id = ANY(%s)",
                           ids)
    distinct = await scalar(
        db, "SELECT count(DISTINCT message_id) FROM message_effects WHERE message_id = ANY(%s)",
        ids)
    acked = await scalar(db, "SELECT count(*) FROM message_deliveries WHERE message_id = ANY(%s)"
                         " AND status = 'acked'", ids)
    assert (effects, distinct, acked) == (len(ids), len(ids), len(ids)), \
        "an effect is missing or was recorded twice"


@pytest.fixture(scope="module")
def effects(endpoints: ep.Endpoints) -> None:
    install_effects(endpoints.owner)


async def test_10000_messages_3_receivers_one_killed_and_restarted(db, settings, effects):
    tenant, instances = await setup(db, "crunch", 3)
    agent = Destination(agent="crunch")
    doomed = await send(db, tenant, [MessageIn(to=agent, type="late", ttl_s=1)
                                     for _ in range(200)])
    await asyncio.sleep(1.2)  # their time to live passes before anyone listens
    ids = await send(db, tenant, [MessageIn(to=agent, type="work", payload={"n": i})
                                  for i in range(10_000)])
    env = cli_env(settings)
    procs = [start(env, tenant, "crunch", [i]) for i in instances]
    try:
        for round_ in range(1, 5):  # kill -9 receiver 0 at four points of progress
            await wait_until(lambda r=round_: scalar(
                db, "SELECT count(*) >= %s FROM message_effects WHERE message_id = ANY(%s)",
                r * 2000, ids), 120, f"{round_ * 2000} messages processed")
            kill(procs[0])
            procs[0] = start(env, tenant, "crunch", [instances[0]])
        await wait_until(lambda: scalar(
            db, "SELECT count(*) = 0 FROM message_deliveries WHERE message_id = ANY(%s)"
            " AND status <> 'acked'", ids), 120, "every message acked", step=0.2)
    finally:
        for p in procs:
            kill(p)
    await assert_once(db, ids)
    assert await scalar(db, "SELECT count(*) FROM message_effects WHERE message_id = ANY(%s)",
                        doomed) == 0, "an expired message was delivered"
    async with db.tenant_connection(tenant) as conn:
        assert (await service.counts(conn)).get("expired") == 200


async def test_a_broadcast_to_20_instances_2_of_which_die(db, settings, effects):
    tenant, instances = await setup(db, "fleet", 20)
    live, dying = instances[:18], instances[18:]
    env = cli_env(settings)
    doomed = start(env, tenant, "fleet", dying, "--no-ack")  # takes its copies, never acks
    (sent,) = await send(db, tenant, [MessageIn(to=Destination(broadcast=True),
                                                type="shutdown.notice", ttl_s=3)])
    await wait_until(lambda: scalar(
        db, "SELECT count(*) = 2 FROM message_deliveries WHERE message_id = %s"
        " AND status = 'leased'", sent), 30, "the dying instances to take their copies")
    kill(doomed)
    survivors = start(env, tenant, "fleet", live)
    try:
        await wait_until(lambda: scalar(
            db, "SELECT count(*) = 18 FROM message_effects WHERE message_id = %s", sent),
            30, "18 live instances to process it")
    finally:
        kill(survivors)
    assert await scalar(db, "SELECT count(DISTINCT instance_id) FROM message_effects"
                        " WHERE message_id = %s", sent) == 18
    await asyncio.sleep(3.2)  # the dead ones' copies outlive their time to live
    async with db.tenant_connection(tenant) as conn:
        await service.presence(conn, 60)
        counts = await service.counts(conn)
    assert counts == {"acked": 18, "expired": 2}


@pytest.fixture(scope="module")
def own_server(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL of this module's own: restarting it disturbs no other test."""
    home: Path = tmp_path_factory.mktemp("restart")
    port = free_port()
    server = EmbeddedServer(home, listen="127.0.0.1", port=port, settings=TEST_SERVER_SETTINGS)
    server.acquire()
    conf = make_settings(home, port, "restart")
    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    install_effects(endpoints.owner)
    yield server, conf, endpoints
    server.stop()


async def test_postgres_restarted_mid_stream(own_server) -> None:
    server, conf, endpoints = own_server
    db = Database(conf, endpoints)
    await db.open()
    procs: list[subprocess.Popen[str]] = []
    try:
        tenant, instances = await setup(db, "steady", 2)
        ids = await send(db, tenant, [MessageIn(to=Destination(agent="steady"), type="w")
                                      for _ in range(3000)])
        procs = [start(cli_env(conf), tenant, "steady", [i]) for i in instances]
        await wait_until(lambda: scalar(
            db, "SELECT count(*) >= 500 FROM message_effects"), 60, "500 processed")
        server.stop()  # fast shutdown: every connection is cut mid-flight
        server.start()
        await db.close()
        db = Database(conf, endpoints)
        await db.open()
        await wait_until(lambda: scalar(
            db, "SELECT count(*) = 0 FROM message_deliveries WHERE status <> 'acked'"),
            90, "every message acked", step=0.2)
        await assert_once(db, ids)
        assert all(p.poll() is None for p in procs), "a receiver died with the database"
    finally:
        for p in procs:
            kill(p)
        await db.close()
