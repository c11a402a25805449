"""Every revision is reversible: upgrade -> downgrade to base -> upgrade gives the same schema."""

from __future__ import annotations

import itertools
import logging
import re
import subprocess

import psycopg
import pytest

from agentplane.db import endpoints as ep
from agentplane.db import revisions
from agentplane.db.embedded import EmbeddedServer, pg_binary
from agentplane.db.migrate import Migrator, head, history
from tests.conftest import create_database, drop_database, make_settings

OPTIONAL = ("pgcrypto", "pg_trgm", "btree_gin")

FRESH = "t_migrations_fresh"


@pytest.fixture(scope="module")
def fresh(pg_server: EmbeddedServer, pg_home, pg_port):
    create_database(pg_server, FRESH, template=None)
    settings = make_settings(pg_home, pg_port, FRESH)
    endpoints = ep.resolve(settings, start=False)
    ep.bootstrap(settings, endpoints)
    yield Migrator(endpoints.owner, settings.app_role), endpoints
    drop_database(pg_server, FRESH)


def schema_dump(conninfo: str) -> str:
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    out = subprocess.run(
        [pg_binary("pg_dump"), "--schema-only", "--no-owner", "--exclude-table=alembic_version",
         "-h", str(params["host"]), "-p", str(params["port"]), "-U", str(params["user"]),
         str(params["dbname"])],
        capture_output=True, text=True, check=True,
    ).stdout
    out = "\n".join(line for line in out.splitlines() if not line.startswith("-- Dumped"))
    # Monthly partitions are made for the month a migration runs in and the ones ahead:
    # which months exist depends on the date, not on the schema.
    blocks = re.split(r"(?=\n--\n-- Name: )", out)
    return "".join(b for b in blocks if not MONTHLY.match(b.lstrip("\n-")))


MONTHLY = re.compile(r"\s*Name: [^;]*_\d{4}_\d{2}(?!\d)")


def user_objects(conninfo: str) -> list[tuple[str, str]]:
    with psycopg.connect(conninfo) as conn:
        return conn.execute(
            """
            SELECT c.relkind::text, c.relname FROM pg_class c
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = 'public' AND c.relname <> 'alembic_version'
              AND c.relname NOT LIKE 'alembic_version%'
            UNION ALL
            SELECT 'function', p.proname FROM pg_proc p
            JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname = 'public'
            ORDER BY 1, 2
            """
        ).fetchall()


def test_up_down_up_gives_identical_schema(fresh) -> None:
    migrator, endpoints = fresh
    migrator.upgrade()
    assert migrator.current() == head()
    first = schema_dump(endpoints.owner)
    assert "CREATE TABLE public.tenants" in first

    migrator.downgrade("base")
    assert migrator.current() is None
    assert user_objects(endpoints.owner) == []

    migrator.upgrade()
    second = schema_dump(endpoints.owner)
    assert second == first


def test_each_revision_steps_down_and_up(fresh) -> None:
    migrator, _ = fresh
    migrator.upgrade()
    revisions = [rev for rev, _, _ in history()]
    for rev in reversed(revisions[:-1]):
        migrator.downgrade(rev)
        assert migrator.current() == rev
    migrator.upgrade()
    assert migrator.current() == revisions[-1] == head()


def test_the_head_read_from_the_files_is_alembics() -> None:
    """Commands check the schema without loading Alembic: the same head."""
    assert revisions.latest() == head()


def test_history_is_one_linear_chain() -> None:
    revisions = history()
    assert revisions[0][1] is None
    for (prev, _, _), (_rev, down, doc) in itertools.pairwise(revisions):
        assert down == prev
        assert doc.strip(), "every revision says what it does"


def test_an_external_owner_without_superuser_rights(pg_server: EmbeddedServer, pg_port, cli):
    """A managed PostgreSQL: the owner may create roles but not the untrusted extension
    vector, and the application role already exists, made by someone else. Each says
    so in one line; the migrations carry on without vector."""
    owner, name = "ext_owner", "t_migrations_external"
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as su:
        su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        su.execute(f"DROP ROLE IF EXISTS {owner}")
        su.execute(f"CREATE ROLE {owner} LOGIN PASSWORD 'pw' CREATEROLE")
        su.execute(f"CREATE DATABASE {name} OWNER {owner}")
    url = f"postgresql://{owner}:pw@127.0.0.1:{pg_port}/{name}"
    try:
        refused = cli("db", "upgrade", AGENTPLANE_DATABASE_URL=url)
        assert refused.returncode == 2, refused.stderr
        assert refused.stderr.startswith("error: ") and "Traceback" not in refused.stderr
        assert f"GRANT agentplane_app TO {owner}" in refused.stderr
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as su:
            su.execute(f"GRANT agentplane_app TO {owner}")

        up = cli("db", "upgrade", AGENTPLANE_DATABASE_URL=url)
        assert up.returncode == 0, up.stderr
        assert "extension vector needs a superuser" in up.stderr
        assert "Traceback" not in up.stderr
        # Optional extensions are no warning (see test_optional_extensions_are_one_info_line).
        assert not any(e in up.stderr for e in OPTIONAL), up.stderr
        with psycopg.connect(pg_server.conninfo()) as su:
            available = {r[0] for r in su.execute("SELECT name FROM pg_available_extensions")}
        lacking = [e for e in OPTIONAL if e not in available]
        doctor = cli("doctor", AGENTPLANE_DATABASE_URL=url)
        assert doctor.returncode == 0, doctor.stdout
        row = next(line for line in doctor.stdout.splitlines() if "extension vector" in line)
        assert "warn" in row and "features that need them are off" in row
        row = next(line for line in doctor.stdout.splitlines() if "optional extensions" in line)
        assert ("info" if lacking else "pass") in row and "warn" not in row
        assert f"at head {head()}" in doctor.stdout
        down = cli("db", "downgrade", "base", AGENTPLANE_DATABASE_URL=url)
        assert down.returncode == 0, down.stderr
    finally:
        with psycopg.connect(pg_server.conninfo(), autocommit=True) as su:
            su.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            su.execute(f"REVOKE agentplane_app FROM {owner}")
            su.execute(f"DROP ROLE {owner}")


def test_optional_extensions_are_one_info_line(
    pg_server: EmbeddedServer, pg_home, pg_port, caplog: pytest.LogCaptureFixture
) -> None:
    """A first migration names the optional extensions the server lacks once, at info
    (nothing needs them); vector, which features need, is not among them."""
    name = "t_migrations_extensions"
    create_database(pg_server, name, template=None)
    try:
        with psycopg.connect(pg_server.conninfo()) as su:
            available = {r[0] for r in su.execute("SELECT name FROM pg_available_extensions")}
        lacking = [e for e in OPTIONAL if e not in available]
        settings = make_settings(pg_home, pg_port, name)
        endpoints = ep.resolve(settings, start=False)
        ep.bootstrap(settings, endpoints)
        with caplog.at_level(logging.INFO, logger="agentplane.migrations"):
            Migrator(endpoints.owner, settings.app_role).upgrade()
        said = [
            r for r in caplog.records
            if r.name == "agentplane.migrations" and any(e in r.getMessage() for e in OPTIONAL)
        ]
        if lacking:
            assert len(said) == 1, [r.getMessage() for r in said]
            assert said[0].levelno == logging.INFO
            assert said[0].getMessage().endswith(": " + ", ".join(lacking))
            assert "vector" not in said[0].getMessage()
        else:
            assert said == []
    finally:
        drop_database(pg_server, name)
