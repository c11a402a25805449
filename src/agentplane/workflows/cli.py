"""`agentplane run`, `agentplane runs list|show`, `agentplane workflows list|save`: a thin
layer over the service, acting as the owner of a local tenant (AGENTPLANE_TENANT)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.table import Table

from agentplane.errors import ValidationFailed
from agentplane.tenancy.cli import TenantRef
from agentplane.terminal import console

runs_app = typer.Typer(help="Runs: list them, show one's tree.", no_args_is_help=True)
workflows_app = typer.Typer(help="Workflows: versioned DAGs of tasks.", no_args_is_help=True)
out = console()
T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(runs_app, name="runs")
    app.add_typer(workflows_app, name="workflows")


@contextlib.asynccontextmanager
async def opened(conf: Any, endpoints: Any) -> AsyncIterator[Any]:
    from agentplane.db.pool import Database

    db = Database(conf, endpoints)
    await db.open()
    try:
        yield db
    finally:
        await db.close()


def with_settings_db(fn: Callable[[Any, Any], Awaitable[T]]) -> T:
    """Run fn(db, settings) against the configured (or embedded) database."""
    from agentplane.config import get_settings
    from agentplane.db.endpoints import database

    conf = get_settings()

    async def main(endpoints: Any) -> T:
        async with opened(conf, endpoints) as db:
            return await fn(db, conf)

    with database(conf) as endpoints:
        return asyncio.run(main(endpoints))


def with_db(fn: Callable[[Any, Any, Any], Awaitable[T]], tenant: str | None) -> T:
    """Run fn(db, settings, principal) as the owner of `tenant` (slug or id)."""
    from agentplane.runtime.local import owner_principal

    async def main(db: Any, conf: Any) -> T:
        return await fn(db, conf, await owner_principal(db, tenant))

    return with_settings_db(main)


def parse_inputs(items: list[str]) -> dict[str, Any]:
    """NAME=VALUE, taken as it is; NAME=@path is the file's text (NAME=@@x is the text @x).
    A value is never read from a file that happens to share its name."""
    inputs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValidationFailed(f"--input {item!r}: use NAME=VALUE (or NAME=@path/to/file)")
        if value.startswith("@@"):
            value = value[1:]
        elif value.startswith("@"):
            path = Path(value[1:]).expanduser()
            if not path.is_file():
                raise ValidationFailed(f"--input {name}: no file {value[1:]!r} to read")
            value = path.read_text(errors="replace")
        inputs[name] = value
    return inputs


def run(
    query: Annotated[str | None, typer.Argument(help="A question for a single-query run.")] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Run this workflow (name or id).")
    ] = None,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            help="A workflow input, NAME=VALUE, or NAME=@path for a file's text (repeatable).",
        ),
    ] = None,
    mode: Annotated[str, typer.Option(help="SIMPLE, STANDARD or COMPLEX (query runs).")] = "SIMPLE",
    agent: Annotated[str | None, typer.Option(help="The agent of a query run.")] = None,
    model: Annotated[
        str | None,
        typer.Option(help="provider/model for every task, instead of the agents' own."),
    ] = None,
    wait: Annotated[bool, typer.Option(help="Execute here and show live progress.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final tree as JSON.")] = False,
    tenant: TenantRef = None,
) -> None:
    """Submit a run (a query, or a workflow with inputs) and show its tasks live."""
    from agentplane.runtime.local import run_and_show, summary
    from agentplane.workflows.models import RunIn

    if (query is None) == (workflow is None):
        raise ValidationFailed('give a query ("agentplane run \\"...\\"") or --workflow NAME')
    try:
        body = RunIn(
            workflow=workflow,
            query=query,
            mode=mode.upper(),
            agent=agent,
            model=model,
            inputs=parse_inputs(inputs or []),
        )
    except ValidationError as exc:
        fields = ", ".join(f"--{e['loc'][0]}: {e['msg']}" for e in exc.errors() if e["loc"])
        raise ValidationFailed(f"invalid {fields or exc.errors()[0]['msg']}") from None

    async def go(db: Any, conf: Any, principal: Any) -> Any:
        shown = console(stderr=True) if as_json else out
        return await run_and_show(db, conf, principal, body, shown, wait=wait)

    tree = with_db(go, tenant)
    if as_json:
        out.print_json(tree.model_dump_json())
        return
    out.print(summary(tree))
    if tree.run.result:
        out.print(tree.run.result[:2000], highlight=False)
    if tree.run.status == "failed":
        raise typer.Exit(1)


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    tenant: TenantRef = None,
) -> None:
    """The newest runs first. A cost is `—` when unknown (no price for its model), or
    `$x + unknown` when some of its calls have no price."""
    from agentplane.money import shown
    from agentplane.workflows import service

    async def go(db: Any, conf: Any, principal: Any) -> Any:
        async with db.tenant_connection(principal.tenant_id) as conn:
            return await service.list_runs(conn, status=status, workflow=workflow, limit=limit)

    page = with_db(go, tenant)
    table = Table("id", "kind", "workflow", "status", "tasks", "tokens", "cost", "created")
    for r in page.items:
        table.add_row(
            str(r.id),
            r.kind,
            r.workflow_name or (r.mode or ""),
            r.status,
            f"{r.completed_tasks}/{r.total_tasks}",
            str(r.total_tokens),
            shown(r.total_cost_usd, r.unpriced_calls),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        )
    out.print(table)


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the tree as JSON.")] = False,
    tenant: TenantRef = None,
) -> None:
    """A run's tree: tasks, agent executions with their states, LLM and tool calls."""
    from agentplane.runtime.local import render, summary
    from agentplane.workflows import service

    try:
        rid = UUID(run_id)
    except ValueError:
        raise ValidationFailed(f"{run_id!r} is not a run id") from None

    async def go(db: Any, conf: Any, principal: Any) -> Any:
        async with db.tenant_connection(principal.tenant_id) as conn:
            return await service.run_tree(conn, rid)

    tree = with_db(go, tenant)
    if as_json:
        out.print_json(tree.model_dump_json())
        return
    out.print(render(tree, detail=True))
    out.print(summary(tree))


@workflows_app.command("list")
def workflows_list(tenant: TenantRef = None) -> None:
    """Workflows with their latest version."""
    from agentplane.workflows import service

    async def go(db: Any, conf: Any, principal: Any) -> Any:
        async with db.tenant_connection(principal.tenant_id) as conn:
            return await service.list_workflows(conn)

    table = Table("name", "version", "tasks", "description")
    for w in with_db(go, tenant):
        table.add_row(
            w.name, str(w.version), str(len(w.definition.get("tasks", {}))), w.description or ""
        )
    out.print(table)


@workflows_app.command("save")
def workflows_save(
    path: Annotated[
        Path, typer.Argument(help="A YAML or JSON definition.", exists=True, dir_okay=False)
    ],
    tenant: TenantRef = None,
) -> None:
    """Save a workflow definition (a new version when the name exists)."""
    from agentplane.workflows import service
    from agentplane.workflows.models import WorkflowIn

    body = WorkflowIn(source=path.read_text())

    async def go(db: Any, conf: Any, principal: Any) -> Any:
        async with db.tenant_connection(principal.tenant_id) as conn:
            return await service.save_workflow(conn, body, principal.user_id)

    w = with_db(go, tenant)
    out.print(f"workflow {w.name} version {w.version} saved")
    out.print(json.dumps({"id": str(w.id), "tasks": list(w.definition["tasks"])}))
