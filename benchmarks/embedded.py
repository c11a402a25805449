"""The embedded PostgreSQL a benchmark runs on: a temporary home, a free-ish port."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path
from typing import Any

import psycopg

from agentplane.db.embedded import EmbeddedServer


def start(prefix: str, settings: dict[str, str]) -> tuple[Path, int, EmbeddedServer]:
    """A server started (acquired) on a new home; the caller releases it."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    port = 55000 + (uuid.uuid4().int % 4000)
    server = EmbeddedServer(home, listen="127.0.0.1", port=port, settings=settings)
    server.acquire()
    return home, port, server


def create_db(server: EmbeddedServer, name: str) -> str:
    """A new, empty database on `server`; its conninfo."""
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.conninfo(dbname=name)


async def migrated(home: Path, port: int, database: str, **settings: object) -> tuple[Any, Any]:
    """(an open Database, its endpoints) on the embedded server, migrated to head."""
    from agentplane.config import Settings
    from agentplane.db import endpoints as ep
    from agentplane.db.migrate import Migrator
    from agentplane.db.pool import Database

    conf = Settings(home=home, embedded_listen="127.0.0.1", embedded_port=port,
                    database_name=database, env="test", **settings)
    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    db = Database(conf, endpoints)
    await db.open()
    return db, endpoints


async def tenant(db: Any) -> uuid.UUID:
    """A new tenant for the benchmark's rows."""
    async with db.admin_connection() as conn:
        cur = await conn.execute("INSERT INTO tenants (name, slug) VALUES ('bench', %s)"
                                 " RETURNING id", [f"bench-{uuid.uuid4().hex[:8]}"])
        return (await cur.fetchone())["id"]
