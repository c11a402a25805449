"""Shared fixtures: one embedded PostgreSQL per test session, a migrated template
database, a clone of it per test module, the ASGI app, and the real CLI."""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg import sql

from agentplane.app import create_app
from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.migrate import Migrator
from agentplane.db.pool import Database

# The suite must not pick up the developer's own configuration.
for _key in [k for k in os.environ if k.startswith("AGENTPLANE_")]:
    del os.environ[_key]

# Durability is not under test here; speed is welcome.
TEST_SERVER_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "400",
}
TEMPLATE = "agentplane_template"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="session")
def pg_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def pg_server(pg_home: Path, pg_port: int) -> Iterator[EmbeddedServer]:
    server = EmbeddedServer(
        pg_home, listen="127.0.0.1", port=pg_port, settings=TEST_SERVER_SETTINGS
    )
    server.acquire()
    yield server
    server.stop()


# The local servers that stand in for vendors listen on loopback, which only development
# reaches by default (agentplane.outbound).
LOOPBACK_ALLOWED = "127.0.0.0/8,::1"


def make_settings(home: Path, port: int, database: str, **overrides: object) -> Settings:
    return Settings(
        **{
            "home": home,
            "embedded_listen": "127.0.0.1",
            "embedded_port": port,
            "database_name": database,
            "env": "test",
            "outbound_allow": LOOPBACK_ALLOWED,
            **overrides,
        }
    )


@pytest.fixture(scope="session")
def template_db(pg_server: EmbeddedServer, pg_home: Path, pg_port: int) -> str:
    settings = make_settings(pg_home, pg_port, TEMPLATE)
    endpoints = ep.resolve(settings, start=False)
    ep.bootstrap(settings, endpoints)
    Migrator(endpoints.owner, settings.app_role).upgrade()
    return TEMPLATE


def superuser_conn(server: EmbeddedServer) -> psycopg.Connection:
    return psycopg.connect(server.conninfo(), autocommit=True)


def create_database(server: EmbeddedServer, name: str, template: str | None = TEMPLATE) -> None:
    with superuser_conn(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        stmt = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            stmt += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
        conn.execute(stmt)


def drop_database(server: EmbeddedServer, name: str) -> None:
    with superuser_conn(server) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def database_name(
    pg_server: EmbeddedServer, template_db: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A migrated database of this test module's own, cloned from the template."""
    name = "t_" + re.sub(r"\W", "_", request.module.__name__.rsplit(".", 1)[-1])[:50]
    create_database(pg_server, name, template_db)
    yield name
    drop_database(pg_server, name)


@pytest.fixture(scope="module")
def settings(pg_home: Path, pg_port: int, database_name: str) -> Settings:
    return make_settings(pg_home, pg_port, database_name)


@pytest.fixture(scope="module")
def endpoints(settings: Settings) -> ep.Endpoints:
    return ep.resolve(settings, start=False)


@pytest.fixture(scope="module")
async def db(settings: Settings, endpoints: ep.Endpoints) -> AsyncIterator[Database]:
    database = Database(settings, endpoints)
    await database.open()
    yield database
    await database.close()


@pytest.fixture
async def now(db: Database) -> datetime:
    """The database's now() when the test starts: the instant a test dates its rows by."""
    from tests.support.dates import db_now

    return await db_now(db)


@pytest.fixture(scope="module")
def app(settings: Settings, db: Database):
    return create_app(settings, db=db)


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTPLANE_")}
    env.update(
        {
            "AGENTPLANE_HOME": str(settings.home),
            "AGENTPLANE_DATABASE_NAME": settings.database_name,
            "AGENTPLANE_EMBEDDED_LISTEN": settings.embedded_listen,
            "AGENTPLANE_EMBEDDED_PORT": str(settings.embedded_port),
            "AGENTPLANE_ENV": "test",
            "AGENTPLANE_OUTBOUND_ALLOW": LOOPBACK_ALLOWED,
            "COLUMNS": "200",
        }
    )
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str], timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The real `agentplane` command, as a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "agentplane", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        check=False,
    )


@pytest.fixture(scope="module")
def cli(settings: Settings):
    env = cli_env(settings)

    def run(
        *args: str, timeout: float = 60, input: str | None = None, **extra_env: str
    ) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, env={**env, **extra_env}, timeout=timeout, input=input)

    return run


# --- tenants for tests -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TenantContext:
    tenant_id: uuid.UUID
    user_id: uuid.UUID
    api_key: str
    """The plaintext API key (its owner is user_id)."""
    headers: dict[str, str]
    """{"Authorization": "Bearer <api_key>"}"""
    slug: str
    api_key_id: uuid.UUID
    role: str


async def make_tenant(
    db: Database,
    *,
    role: str = "owner",
    scopes: list[str] | set[str] | None = None,
    slug: str | None = None,
) -> TenantContext:
    """A fresh tenant, a user with `role` in it and an API key of that user, made
    through the service layer. `scopes` defaults to everything the role grants; rate
    limits are set high enough not to get in a test's way."""
    from agentplane.auth import keys as auth_keys
    from agentplane.auth import scopes as sc
    from agentplane.auth.models import ApiKeyIn
    from agentplane.tenancy import members, tenants
    from agentplane.tenancy.users import NewUser

    slug = slug or f"t-{uuid.uuid4().hex[:12]}"
    tenant, user_id = await tenants.create_tenant(
        db,
        name=slug,
        slug=slug,
        owner=NewUser(email=f"owner@{slug}.test"),
        rate_limit_per_hour=1_000_000,
    )
    if role != "owner":
        user_id, _ = await members.add_member(
            db, tenant["id"], NewUser(email=f"{role}@{slug}.test"), role
        )
    wanted = sorted(scopes) if scopes is not None else sorted(sc.granted(role))
    row, key = await auth_keys.create_key(
        db,
        tenant["id"],
        ApiKeyIn(name="test key", scopes=wanted, rate_limit_per_hour=1_000_000, user_id=user_id),
        actor=None,
    )
    return TenantContext(
        tenant_id=tenant["id"],
        user_id=user_id,
        api_key=key,
        headers={"Authorization": f"Bearer {key}"},
        slug=slug,
        api_key_id=row["id"],
        role=role,
    )
