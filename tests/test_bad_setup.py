"""Each misconfiguration gives one line naming the problem and the fix, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import psycopg
import pytest

from agentplane.config import Settings
from agentplane.db.embedded import EmbeddedServer
from agentplane.errors import ConfigError
from tests.conftest import free_port
from tests.support.old_postgres import OldPostgres


def assert_one_line_error(result, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_unreachable_database_url(cli) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://someone@127.0.0.1:{port}/agentplane"
    result = cli("db", "current", AGENTPLANE_DATABASE_URL=url)
    assert_one_line_error(result, "cannot reach PostgreSQL", f"127.0.0.1:{port}",
                          "connection refused", "AGENTPLANE_DATABASE_URL")


def test_wrong_password(cli, pg_server: EmbeddedServer, pg_port: int,
                        settings: Settings) -> None:
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS pw_user")
        conn.execute("CREATE ROLE pw_user LOGIN PASSWORD 'the-right-one'")
    url = f"postgresql://pw_user:not-the-password@127.0.0.1:{pg_port}/{settings.database_name}"
    result = cli("db", "current", AGENTPLANE_DATABASE_URL=url)
    assert_one_line_error(result, "rejected the password", "pw_user",
                          "fix the password in AGENTPLANE_DATABASE_URL")
    assert "not-the-password" not in result.stderr + result.stdout


def test_server_older_than_14(cli) -> None:
    with OldPostgres("13.4") as old:
        url = f"postgresql://someone@127.0.0.1:{old.port}/agentplane?sslmode=disable"
        result = cli("db", "current", AGENTPLANE_DATABASE_URL=url)
    assert_one_line_error(result, "PostgreSQL 13.4", "older than 14",
                          "AGENTPLANE_DATABASE_URL at PostgreSQL 14 or newer")


def test_home_not_writable(cli, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = cli("db", "current", AGENTPLANE_HOME=str(blocker / "home"))
    assert_one_line_error(result, "AGENTPLANE_HOME", "is not writable",
                          "point AGENTPLANE_HOME at a directory you can write to")


def test_port_in_use(cli) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        result = cli("up", AGENTPLANE_PORT=str(port), timeout=30)
    assert_one_line_error(result, f"port {port}", "already in use", "AGENTPLANE_PORT")


@pytest.mark.parametrize("command", [("db", "upgrade"), ("db", "current"), ("up",)])
def test_database_ahead_of_code_is_refused(cli, endpoints, command) -> None:
    with psycopg.connect(endpoints.owner, autocommit=True) as conn:
        before = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        conn.execute("UPDATE alembic_version SET version_num = '9999_future'")
        try:
            result = cli(*command, AGENTPLANE_PORT=str(free_port()), timeout=30)
            after = conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]
        finally:
            conn.execute("UPDATE alembic_version SET version_num = %s", [before])
    assert_one_line_error(result, "9999_future", "newer version", "install that version")
    assert after == "9999_future"  # nothing was guessed or rewritten


def test_invalid_setting_value(cli) -> None:
    result = cli("config", AGENTPLANE_PORT="not-a-port")
    assert_one_line_error(result, "AGENTPLANE_PORT")


def test_an_allow_list_entry_that_is_no_network(cli) -> None:
    result = cli("config", AGENTPLANE_OUTBOUND_ALLOW="10.0.0.0/8,intranet")
    assert_one_line_error(result, "AGENTPLANE_OUTBOUND_ALLOW", "'intranet' is not an IP")


def test_placeholder_secret_refused_outside_development(cli) -> None:
    result = cli("config", AGENTPLANE_ENV="production", AGENTPLANE_SECRET_KEY="change-me")
    assert_one_line_error(result, "AGENTPLANE_SECRET_KEY", "placeholder")
    assert "change-me" not in result.stderr
    ok = cli("config", AGENTPLANE_ENV="development", AGENTPLANE_SECRET_KEY="change-me")
    assert ok.returncode == 0, ok.stderr
    assert "change-me" not in ok.stdout  # masked all the same


@pytest.mark.parametrize("env", ["production", "test"])
@pytest.mark.parametrize("name", ["secret_key", "encryption_key"])
def test_each_secret_is_checked_in_every_mode_but_development(env: str, name: str) -> None:
    with pytest.raises(ConfigError, match=f"AGENTPLANE_{name.upper()} is a placeholder"):
        Settings(env=env, **{name: "Change-Me "}).check_secrets()
    Settings(env="development", **{name: "change-me"}).check_secrets()
    Settings(env=env, **{name: "a-real-secret-of-some-length"}).check_secrets()
