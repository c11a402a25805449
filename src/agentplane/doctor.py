"""`agentplane doctor`: is this installation healthy? One row per check."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.migrate import Migrator, head
from agentplane.errors import AgentplaneError

# Optional: nothing depends on them (see migration 0001), so missing is only info.
OPTIONAL_EXTENSIONS = ("pgcrypto", "pg_trgm", "btree_gin")
# Features depend on these: missing is a warning.
NEEDED_EXTENSIONS = ("vector",)

Status = Literal["pass", "info", "warn", "fail"]


@dataclass
class Check:
    name: str
    status: Status
    detail: str


def run_checks(settings: Settings) -> list[Check]:
    checks: list[Check] = [
        Check(
            "settings",
            "pass",
            "embedded server in " + str(settings.home) if settings.embedded else "external server",
        )
    ]
    try:
        endpoints = ep.resolve(settings)
    except AgentplaneError as exc:
        return [*checks, Check("database reachable", "fail", exc.detail)]
    try:
        ep.bootstrap(settings, endpoints)
        checks += _database_checks(settings, endpoints)
    except AgentplaneError as exc:
        checks.append(Check("database reachable", "fail", exc.detail))
    finally:
        if endpoints.server is not None:
            endpoints.server.release()
    return checks


def _database_checks(settings: Settings, endpoints: ep.Endpoints) -> list[Check]:
    checks = []
    with ep.connect(endpoints.owner) as conn:
        checks.append(Check("database reachable", "pass", endpoints.where))
        version = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        checks.append(Check("server version", "pass", f"PostgreSQL {version} (>= 14)"))
        installed = {r[0] for r in conn.execute("SELECT extname FROM pg_extension").fetchall()}
    checks.append(_extensions(installed, OPTIONAL_EXTENSIONS, "info", "nothing needs them"))
    checks.append(
        _extensions(installed, NEEDED_EXTENSIONS, "warn", "features that need them are off")
    )
    migrator = Migrator(endpoints.owner, settings.app_role)
    try:
        current = migrator.check_not_ahead()
    except AgentplaneError as exc:
        checks.append(Check("migrations", "fail", exc.detail))
    else:
        expected = head()
        if current == expected:
            checks.append(Check("migrations", "pass", f"at head {expected}"))
        else:
            checks.append(
                Check(
                    "migrations",
                    "fail",
                    f"at {current or 'nothing'}, head is {expected}: run `agentplane db upgrade`",
                )
            )
    checks.append(_app_role_check(endpoints))
    return checks


def _extensions(installed: set[str], wanted: tuple[str, ...], status: Status, why: str) -> Check:
    name = "optional extensions" if status == "info" else "extension " + ", ".join(wanted)
    missing = [e for e in wanted if e not in installed]
    if not missing:
        return Check(name, "pass", "installed: " + ", ".join(wanted))
    present = [e for e in wanted if e in installed]
    detail = (f"installed: {', '.join(present)}; " if present else "") + (
        f"missing: {', '.join(missing)} ({why})"
    )
    return Check(name, status, detail)


def _app_role_check(endpoints: ep.Endpoints) -> Check:
    try:
        with ep.connect(endpoints.app) as conn:
            row = conn.execute(
                "SELECT current_user, rolsuper, rolbypassrls, current_setting('row_security')"
                " FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except AgentplaneError as exc:
        return Check("application role", "fail", exc.detail)
    assert row is not None
    user, superuser, bypass, row_security = row
    if superuser or bypass or row_security != "on":
        return Check(
            "application role",
            "fail",
            f"{user} can bypass row-level security (superuser={superuser}, "
            f"bypassrls={bypass}, row_security={row_security})",
        )
    return Check("application role", "pass", f"{user} cannot bypass row-level security")
