"""The `agentplane` command: a thin layer over the Python API.

Domain errors become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import importlib
import sys
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from agentplane import __version__
from agentplane.config import Settings, get_settings
from agentplane.errors import AgentplaneError
from agentplane.terminal import console

app = typer.Typer(
    name="agentplane",
    help="A PostgreSQL-native control plane for multi-agent LLM systems.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = console()
err = console(stderr=True)


def settings() -> Settings:
    return get_settings()


def _version(value: bool) -> None:
    if value:
        out.print(f"agentplane {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            envvar="AGENTPLANE_URL",
            help="A shared agentplane server: tenant commands go through its HTTP API.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key", envvar="AGENTPLANE_API_KEY", help="The API key to use with --url."
        ),
    ] = None,
) -> None:
    """agentplane command line."""
    from agentplane import client

    client.target.url, client.target.api_key = url, api_key


@app.command()
def up() -> None:
    """Start the embedded database (or use AGENTPLANE_DATABASE_URL), migrate, serve the API."""
    from agentplane.server import up as serve

    conf = settings()

    def announce(endpoints, address) -> None:
        where = f"embedded in {conf.home}" if endpoints.server else endpoints.where
        err.print(
            Text.assemble(
                (f"agentplane {__version__}", "bold"),
                f" API on http://{address[0]}:{address[1]}  ·  PostgreSQL {where}",
            ),
            soft_wrap=True,
        )
        from agentplane.tenancy.cli import first_run_hint

        hint = first_run_hint(endpoints.owner)
        if hint:
            err.print(hint, highlight=False, soft_wrap=True)

    serve(conf, on_ready=announce)


@app.command()
def doctor() -> None:
    """Check the installation: database, version, extensions, migrations, RLS."""
    from agentplane.doctor import run_checks

    checks = run_checks(settings())
    table = Table("check", "status", "detail")
    colors = {"pass": "green", "info": "cyan", "warn": "yellow", "fail": "red"}
    for check in checks:
        table.add_row(check.name, Text(check.status, colors[check.status]), check.detail)
    out.print(table)
    if any(c.status == "fail" for c in checks):
        raise typer.Exit(1)


@app.command("config")
def show_config() -> None:
    """Print the effective settings, secrets masked."""
    table = Table("setting", "value")
    for key, value in settings().masked().items():
        table.add_row(f"AGENTPLANE_{key.upper()}", str(value))
    out.print(table)


@db_app.command("upgrade")
def db_upgrade(target: Annotated[str, typer.Argument(help="Revision to reach.")] = "head") -> None:
    """Apply migrations up to TARGET (default: head)."""
    from agentplane.db.setup import database

    conf = settings()
    with database(conf, migrate=False) as endpoints:
        from agentplane.db.migrate import Migrator

        migrator = Migrator(endpoints.owner, conf.app_role)
        migrator.upgrade(target)
        out.print(f"database at {migrator.current()}")


@db_app.command("downgrade")
def db_downgrade(
    target: Annotated[str, typer.Argument(help="Revision to reach, or 'base'.")],
) -> None:
    """Revert migrations down to TARGET."""
    from agentplane.db.migrate import Migrator
    from agentplane.db.setup import database

    conf = settings()
    with database(conf, migrate=False) as endpoints:
        migrator = Migrator(endpoints.owner, conf.app_role)
        migrator.downgrade(target)
        out.print(f"database at {migrator.current() or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Print the database's migration."""
    from agentplane.db.migrate import Migrator, head
    from agentplane.db.setup import database

    conf = settings()
    with database(conf, migrate=False) as endpoints:
        current = Migrator(endpoints.owner, conf.app_role).check_not_ahead()
    mark = " (head)" if current == head() else f" (head is {head()})"
    out.print(f"{current or 'base'}{mark}")


@db_app.command("history")
def db_history() -> None:
    """List the migrations this agentplane ships."""
    from agentplane.db.migrate import history

    table = Table("revision", "revises", "description")
    for rev, down, doc in history():
        table.add_row(rev, down or "-", doc.splitlines()[0] if doc else "")
    out.print(table)


# The commands defined by the packages, by name: (module, attribute, how it is added). A
# command line imports only the package it names (the full list only for help or an
# unknown name), which spares a command the start-up of all the others.
PACKAGES: dict[str, tuple[str, str, str]] = {
    "tenant": ("agentplane.tenancy.cli", "tenant_app", "group"),
    "user": ("agentplane.tenancy.cli", "user_app", "group"),
    "key": ("agentplane.auth.cli", "key_app", "group"),
    "providers": ("agentplane.llm.cli", "providers_app", "group"),
    "events": ("agentplane.events.cli", "events", "command"),
    "usage": ("agentplane.usage.cli", "usage", "command"),
    "ops": ("agentplane.ops.cli", "ops_app", "group"),
    "worker": ("agentplane.queue.cli", "register", "register"),
    "jobs": ("agentplane.queue.cli", "register", "register"),
    "dlq": ("agentplane.queue.cli", "register", "register"),
    "schedules": ("agentplane.queue.cli", "register", "register"),
    "run": ("agentplane.workflows.cli", "register", "register"),
    "runs": ("agentplane.workflows.cli", "register", "register"),
    "workflows": ("agentplane.workflows.cli", "register", "register"),
    "input-requests": ("agentplane.workflows.cli", "register", "register"),
    "agents": ("agentplane.agents.cli", "agents_app", "group"),
    "messages": ("agentplane.messages.cli", "messages_app", "group"),
    "tools": ("agentplane.runtime.cli", "tools_app", "group"),
    "demo": ("agentplane.runtime.cli", "demo", "command"),
}
BUILT_IN = {"up", "doctor", "config", "db"}


def _register(argv: list[str]) -> None:
    named = next((a for a in argv if not a.startswith("-")), None)
    if named in BUILT_IN:
        return
    wanted = [named] if named in PACKAGES else list(PACKAGES)
    done: set[tuple[str, str]] = set()
    for name in wanted:
        module, attr, how = PACKAGES[name]
        if (module, attr) in done:
            continue
        done.add((module, attr))
        found = getattr(importlib.import_module(module), attr)
        if how == "group":
            app.add_typer(found, name=name)
        elif how == "command":
            app.command(name)(found)
        else:
            found(app)


def error_lines(exc: AgentplaneError) -> list[str]:
    """One line per problem when the error lists them ({field, value, message} each, as
    ValidationFailed.listing makes), else its detail."""
    listed = exc.extra.get("errors")
    if isinstance(listed, list) and listed and all(
        isinstance(p, dict) and {"field", "value", "message"} <= set(p) for p in listed
    ):
        return [f"{p['field']}: {p['message']}" for p in listed]
    return [exc.detail]


def main() -> None:
    _register(sys.argv[1:])
    try:
        app()
    except AgentplaneError as exc:
        for line in error_lines(exc):
            err.print(Text.assemble(("error:", "red"), f" {line}"), highlight=False,
                      soft_wrap=True)
        sys.exit(2)
    except OSError as exc:  # a file named on the command line: the user's to fix
        err.print(Text.assemble(("error:", "red"), f" {exc.strerror or exc}: "
                                f"{exc.filename or ''}".rstrip(": ")), highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
