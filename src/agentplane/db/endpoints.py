"""Where the database is and how each role reaches it.

The owner role runs migrations and admin paths; the application role (without
BYPASSRLS) serves the API and workers. With the embedded server both connect
over its private Unix socket; with an external server the owner comes from
AGENTPLANE_DATABASE_URL and the application role from AGENTPLANE_APP_DATABASE_URL,
or else from the owner's connection with the role set at connection start.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from agentplane.config import Settings
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.errors import describe_connect_error
from agentplane.errors import ConfigError, DatabaseUnavailable

MIN_SERVER_VERSION = 140000


@dataclass(frozen=True)
class Endpoints:
    owner: str
    app: str
    server: EmbeddedServer | None

    @property
    def where(self) -> str:
        return describe_target(self.owner)


def describe_target(conninfo: str) -> str:
    parts = conninfo_to_dict(conninfo)
    host = parts.get("host") or "localhost"
    port = parts.get("port") or "5432"
    return f"{host}:{port}/{parts.get('dbname', '')}"


def embedded_server(settings: Settings) -> EmbeddedServer:
    return EmbeddedServer(
        home=settings.home,
        listen=settings.embedded_listen,
        port=settings.embedded_port,
        settings=settings.embedded_settings,
    )


def resolve(settings: Settings, *, start: bool = True) -> Endpoints:
    """Endpoints for both roles; starts (and registers with) the embedded server."""
    timeout = {"connect_timeout": str(max(1, round(settings.connect_timeout)))}
    if settings.database_url is None:
        server = embedded_server(settings)
        if start:
            server.acquire()
        base = conninfo_to_dict(server.conninfo())
        owner = make_conninfo(**{**base, "dbname": settings.database_name}, **timeout)
        app = make_conninfo(
            **{**base, "user": settings.app_role, "dbname": settings.database_name}, **timeout
        )
        return Endpoints(owner=in_utc(owner), app=in_utc(app), server=server)
    try:
        owner = make_conninfo(settings.database_url.get_secret_value(), **timeout)
    except psycopg.ProgrammingError as exc:
        raise ConfigError(
            f"AGENTPLANE_DATABASE_URL is not a valid connection string: {exc}"
        ) from None
    if settings.app_database_url is not None:
        app = make_conninfo(settings.app_database_url.get_secret_value(), **timeout)
    else:
        app = make_conninfo(owner, options=f"-c role={settings.app_role}")
    return Endpoints(owner=in_utc(owner), app=in_utc(app), server=None)


def in_utc(conninfo: str) -> str:
    """Sessions compute days and months (budgets, billing periods, partitions) in UTC,
    whatever the server's or the database's TimeZone."""
    options = conninfo_to_dict(conninfo).get("options") or ""
    return make_conninfo(conninfo, options=f"{options} -c TimeZone=UTC".strip())


def connect(conninfo: str, **kwargs: object) -> psycopg.Connection:
    """A sync connection with a clear one-line error and a version check."""
    try:
        conn = psycopg.connect(conninfo, **kwargs)  # type: ignore[arg-type]
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(describe_connect_error(exc, describe_target(conninfo))) from None
    check_version(conn.info.server_version, describe_target(conninfo))
    return conn


def check_version(version_num: int, where: str) -> None:
    if version_num < MIN_SERVER_VERSION:
        major, minor = divmod(version_num, 10000)
        raise DatabaseUnavailable(
            f"PostgreSQL {major}.{minor} at {where} is older than 14; upgrade it or point "
            "AGENTPLANE_DATABASE_URL at PostgreSQL 14 or newer"
        )


def bootstrap(settings: Settings, endpoints: Endpoints) -> None:
    """Create the database (embedded only) and the application role if missing."""
    if endpoints.server is not None:
        maintenance = make_conninfo(endpoints.owner, dbname="postgres")
        with connect(maintenance, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [settings.database_name]
            ).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE DATABASE {}").format(sql.Identifier(settings.database_name))
                )
            ensure_app_role(conn, settings.app_role, login=True)
        return
    with connect(endpoints.owner, autocommit=True) as conn:
        # With a URL of its own the application role logs in by itself; otherwise the
        # owner switches to it at connection start, which needs membership.
        ensure_app_role(conn, settings.app_role, login=False,
                        switch=settings.app_database_url is None)


def ensure_app_role(
    conn: psycopg.Connection, role: str, *, login: bool, switch: bool = False
) -> None:
    row = conn.execute(
        "SELECT rolbypassrls OR rolsuper FROM pg_roles WHERE rolname = %s", [role]
    ).fetchone()
    if row is None:
        try:
            conn.execute(
                sql.SQL("CREATE ROLE {} {} NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE").format(
                    sql.Identifier(role), sql.SQL("LOGIN" if login else "NOLOGIN")
                )
            )
        except psycopg.errors.InsufficientPrivilege:
            raise ConfigError(
                f"cannot create the application role {role}: the owner role lacks CREATEROLE; "
                f"create it yourself (CREATE ROLE {role} NOBYPASSRLS) "
                "or set AGENTPLANE_APP_DATABASE_URL"
            ) from None
        except psycopg.errors.DuplicateObject:
            pass  # another process created it first
    elif row[0]:
        raise ConfigError(
            f"the application role {role} can bypass row-level security; "
            f"run ALTER ROLE {role} NOSUPERUSER NOBYPASSRLS"
        )
    if switch:
        # Let the owner switch to the role at connection start (SET ROLE).
        member = conn.execute("SELECT pg_has_role(current_user, %s, 'MEMBER')", [role]).fetchone()
        if member and not member[0]:
            try:
                conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(sql.Identifier(role)))
            except psycopg.errors.InsufficientPrivilege:
                raise ConfigError(
                    f"the owner role cannot switch to the application role {role}, which "
                    f"another role created; as a superuser run GRANT {role} TO "
                    f"{conn.info.user}, or set AGENTPLANE_APP_DATABASE_URL"
                ) from None
