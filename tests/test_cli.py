"""The real `agentplane` command against this module's database."""

from __future__ import annotations

import json

import psycopg

from agentplane import __version__
from agentplane.db.migrate import head


def test_version(cli) -> None:
    result = cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"agentplane {__version__}"


def test_doctor_passes_on_a_migrated_database(cli) -> None:
    result = cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for check in ("database reachable", "server version", "migrations", "application role"):
        row = next(line for line in result.stdout.splitlines() if check in line)
        assert "pass" in row, row
    assert "cannot bypass row-level security" in result.stdout
    assert "vector" in result.stdout


def test_doctor_reports_missing_optional_extensions_as_info(cli, endpoints) -> None:
    """Nothing needs pgcrypto, pg_trgm or btree_gin: missing, they are info, not a
    warning; vector keeps its warning (features need it)."""
    with psycopg.connect(endpoints.owner) as conn:
        installed = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    optional = [e for e in ("pgcrypto", "pg_trgm", "btree_gin") if e not in installed]
    result = cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    row = next(line for line in lines if "optional extensions" in line)
    assert ("info" if optional else "pass") in row and "warn" not in row, row
    if optional:
        assert f"missing: {', '.join(optional)} (nothing needs them)" in result.stdout
    row = next(line for line in lines if "extension vector" in line)
    assert ("pass" if "vector" in installed else "warn") in row, row


def test_doctor_fails_when_migrations_are_behind(cli, endpoints) -> None:
    with psycopg.connect(endpoints.owner, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
        try:
            result = cli("doctor")
        finally:
            conn.execute("UPDATE alembic_version SET version_num = %s", [head()])
    assert result.returncode == 1
    row = next(line for line in result.stdout.splitlines() if "migrations" in line)
    assert "fail" in row and "agentplane db upgrade" in result.stdout


def test_doctor_fails_when_the_app_role_bypasses_rls(cli, pg_server) -> None:
    with psycopg.connect(pg_server.conninfo(), autocommit=True) as conn:
        conn.execute("ALTER ROLE agentplane_app BYPASSRLS")
        try:
            result = cli("doctor")
        finally:
            conn.execute("ALTER ROLE agentplane_app NOBYPASSRLS")
    assert result.returncode != 0
    assert "bypass" in (result.stdout + result.stderr)


def test_db_current_and_history(cli) -> None:
    current = cli("db", "current")
    assert current.returncode == 0
    assert current.stdout.strip() == f"{head()} (head)"
    hist = cli("db", "history")
    assert hist.returncode == 0
    assert "0001" in hist.stdout and head() in hist.stdout


def test_db_downgrade_and_upgrade(cli) -> None:
    down = cli("db", "downgrade", "0001")
    assert down.returncode == 0, down.stderr
    assert "database at 0001" in down.stdout
    assert cli("db", "current").stdout.startswith("0001")
    # A command that needs the schema migrates a database that is behind, then runs.
    tenants = cli("tenant", "list", "--json")
    assert tenants.returncode == 0, tenants.stderr
    assert isinstance(json.loads(tenants.stdout), list)
    assert cli("db", "current").stdout.strip() == f"{head()} (head)"
    up = cli("db", "upgrade")
    assert up.returncode == 0, up.stderr
    assert cli("db", "current").stdout.strip() == f"{head()} (head)"


def test_db_downgrade_to_unknown_revision_is_a_clear_error(cli) -> None:
    result = cli("db", "downgrade", "nope")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert cli("db", "current").stdout.strip() == f"{head()} (head)"


def test_config_masks_secrets(cli) -> None:
    result = cli(
        "config",
        AGENTPLANE_DATABASE_URL="postgresql://owner:hunter2@db.example:5433/agentplane",
        AGENTPLANE_SECRET_KEY="a-very-secret-signing-key",
    )
    assert result.returncode == 0, result.stderr
    assert "hunter2" not in result.stdout
    assert "a-very-secret-signing-key" not in result.stdout
    assert "password=****" in result.stdout
    assert "db.example" in result.stdout


def test_config_reads_a_toml_file_and_env_wins(cli, tmp_path) -> None:
    conf = tmp_path / "agentplane.toml"
    conf.write_text('port = 9123\nlog_level = "DEBUG"\n')
    result = cli("config", AGENTPLANE_CONFIG=str(conf), AGENTPLANE_LOG_LEVEL="WARNING")
    assert result.returncode == 0, result.stderr
    rows = {
        line.split("│")[1].strip(): line.split("│")[2].strip()
        for line in result.stdout.splitlines()
        if line.count("│") >= 3
    }
    assert rows["AGENTPLANE_PORT"] == "9123"
    assert rows["AGENTPLANE_LOG_LEVEL"] == "WARNING"


def test_missing_config_file_is_a_clear_error(cli, tmp_path) -> None:
    result = cli("config", AGENTPLANE_CONFIG=str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "Traceback" not in result.stderr
