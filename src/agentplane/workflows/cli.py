"""`agentplane run`, `agentplane runs ...`, `agentplane workflows ...`, `agentplane
input-requests ...`: commands over the HTTP API (agentplane.client), on a shared server or
in this process as the owner of the tenant named by --tenant (AGENTPLANE_TENANT)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from agentplane import client
from agentplane.errors import NotFound, ValidationFailed
from agentplane.tenancy.cli import TenantRef
from agentplane.terminal import console, print_rows

runs_app = typer.Typer(
    help="Runs: list, show, cancel, pause, resume, retry a task.", no_args_is_help=True
)
workflows_app = typer.Typer(help="Workflows: versioned DAGs of tasks.", no_args_is_help=True)
inputs_app = typer.Typer(
    help="Input requests: what runs ask people, and the answers.", no_args_is_help=True
)
out = console()
T = TypeVar("T")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.add_typer(runs_app, name="runs")
    app.add_typer(workflows_app, name="workflows")
    app.add_typer(inputs_app, name="input-requests")


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
    wait: Annotated[bool, typer.Option(help="Follow the run live until it ends.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final tree as JSON.")] = False,
    tenant: TenantRef = None,
) -> None:
    """Submit a run (a query, or a workflow with inputs) and show its tasks live."""
    from agentplane.queue.registry import import_modules
    from agentplane.runtime.local import run_and_show
    from agentplane.workflows.render import summary

    if (query is None) == (workflow is None):
        raise ValidationFailed('give a query ("agentplane run \\"...\\"") or --workflow NAME')
    body = {"workflow": workflow, "query": query, "mode": mode.upper(), "agent": agent,
            "model": model, "inputs": parse_inputs(inputs or [])}
    body = {k: v for k, v in body.items() if v is not None}
    if not client.remote():
        # The tasks run here: the tools of AGENTPLANE_WORKER_IMPORTS must be known here.
        import_modules(os.environ.get("AGENTPLANE_WORKER_IMPORTS", "").split(","))

    async def go(api: client.Api) -> Any:
        shown = console(stderr=True) if as_json else out
        return await run_and_show(api, body, shown, wait=wait)

    tree = client.call(tenant, go)
    if as_json:
        out.print_json(tree.model_dump_json())
        return
    out.print(summary(tree))
    if tree.run.result:
        out.print(tree.run.result[:2000], highlight=False)
    if tree.run.status == "failed":
        raise typer.Exit(1)


async def run_id_of(api: client.Api, ref: str) -> str:
    """A run's full id from its id or a unique start of it (as git takes commits)."""
    return await api.full_id("/v1/runs", ref, "run")


RunRef = Annotated[str, typer.Argument(help="The run's id (or a unique start of it).")]
JsonOut = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]


@runs_app.command("list")
def runs_list(
    status: Annotated[str | None, typer.Option(help="Only runs with this status.")] = None,
    workflow: Annotated[str | None, typer.Option(help="Only runs of this workflow.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
    as_json: JsonOut = False,
    tenant: TenantRef = None,
) -> None:
    """The newest runs first. A cost is `—` when unknown (no price for its model), or
    `$x + unknown` when some of its calls have no price."""
    from agentplane.workflows.render import money

    async def go(api: client.Api) -> Any:
        return await api.get("/v1/runs", status=status, workflow=workflow, limit=limit)

    rows = client.call(tenant, go)["items"]
    if not as_json:
        for r in rows:
            r["workflow"] = r["workflow_name"] or r["mode"] or ""
            r["tasks"] = f"{r['completed_tasks']}/{r['total_tasks']}"
            r["cost"] = money(r["total_cost_usd"], r.get("unpriced_calls", 0))
            r["created"] = r["created_at"][:19].replace("T", " ")
    print_rows(rows, ["id", "kind", "workflow", "status", "tasks", "total_tokens", "cost",
                      "created"], as_json)


@runs_app.command("show")
def runs_show(run: RunRef, as_json: JsonOut = False, tenant: TenantRef = None) -> None:
    """A run's tree: tasks, agent executions with their states, LLM and tool calls."""
    from agentplane.workflows.models import RunTree
    from agentplane.workflows.render import render, summary

    async def go(api: client.Api) -> Any:
        return await api.get(f"/v1/runs/{await run_id_of(api, run)}/tree")

    tree = RunTree.model_validate(client.call(tenant, go))
    if as_json:
        out.print_json(tree.model_dump_json())
        return
    out.print(render(tree, detail=True))
    out.print(summary(tree))


def _control(action: str) -> Callable[..., None]:
    def command(run: RunRef, tenant: TenantRef = None) -> None:
        async def go(api: client.Api) -> Any:
            return await api.send("POST", f"/v1/runs/{await run_id_of(api, run)}/{action}")

        done = client.call(tenant, go)
        typer.echo(f"run {done['id']} {done['status']}")

    command.__doc__ = {
        "cancel": "Cancel a run: its waiting tasks are cancelled and its running ones stopped.",
        "pause": "Pause a run: no new task starts until it is resumed.",
        "resume": "Resume a run paused by a user.",
    }[action]
    return command


for _action in ("cancel", "pause", "resume"):
    runs_app.command(_action)(_control(_action))


@runs_app.command("retry")
def runs_retry(
    run: RunRef,
    task: Annotated[str, typer.Argument(help="The failed task: its id or its node's name.")],
    tenant: TenantRef = None,
) -> None:
    """Run a failed task again; the run, failed because of it, runs on."""

    async def go(api: client.Api) -> Any:
        rid = await run_id_of(api, run)
        tree = await api.get(f"/v1/runs/{rid}/tree")
        found = [t["id"] for t in tree["tasks"] if t["id"] == task or (
            t["node"] == task and t["status"] == "failed")]
        if not found:
            raise NotFound(f"run {rid} has no failed task {task!r}")
        return await api.send("POST", f"/v1/runs/{rid}/tasks/{found[0]}/retry")

    done = client.call(tenant, go)
    typer.echo(f"run {done['id']} {done['status']}")


@workflows_app.command("list")
def workflows_list(as_json: JsonOut = False, tenant: TenantRef = None) -> None:
    """Workflows with their latest version."""

    async def go(api: client.Api) -> Any:
        return await api.get("/v1/workflows")

    rows = client.call(tenant, go)
    if not as_json:
        for w in rows:
            w["tasks"] = len(w["definition"].get("tasks", {}))
    print_rows(rows, ["name", "id", "version", "tasks", "description"], as_json)


@workflows_app.command("save")
def workflows_save(
    path: Annotated[
        Path, typer.Argument(help="A YAML or JSON definition.", exists=True, dir_okay=False)
    ],
    tenant: TenantRef = None,
) -> None:
    """Save a workflow definition (a new version when the name exists)."""
    body = {"source": path.read_text()}

    async def go(api: client.Api) -> Any:
        return await api.send("POST", "/v1/workflows", body)

    w = client.call(tenant, go)
    out.print(f"workflow {w['name']} version {w['version']} saved")
    out.print(json.dumps({"id": w["id"], "tasks": list(w["definition"]["tasks"])}))


@workflows_app.command("show")
def workflows_show(
    name: Annotated[str, typer.Argument(help="The workflow's name or id.")],
    version: Annotated[
        int | None, typer.Option(min=1, help="This version (default: the latest).")
    ] = None,
    tenant: TenantRef = None,
) -> None:
    """Print a saved definition as YAML (a YAML source as it was written, comments too)."""

    async def go(api: client.Api) -> Any:
        return await api.get(f"/v1/workflows/{name}", version=version)

    w = client.call(tenant, go)
    text = w["source"] if w["format"] == "yaml" else as_yaml(w["definition"])
    typer.echo(text.rstrip("\n"))  # as it is: no wrapping, ready to save to a file


def as_yaml(data: Any) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None  # instructions stay readable
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True)


@workflows_app.command("schema")
def workflows_schema() -> None:
    """Print the JSON Schema of a workflow definition (for editors and CI checks)."""
    from agentplane.workflows.spec import json_schema

    typer.echo(json.dumps(json_schema(), indent=2))


@inputs_app.command("list")
def inputs_list(
    run: Annotated[str | None, typer.Option(help="Only this run's (id or a start of it).")] = None,
    status: Annotated[
        str | None, typer.Option(help="pending, answered or cancelled (default: all).")
    ] = None,
    as_json: JsonOut = False,
    tenant: TenantRef = None,
) -> None:
    """Questions runs asked people (the ask_human tool), newest first."""

    async def go(api: client.Api) -> Any:
        run_id = await run_id_of(api, run) if run else None
        return await api.get("/v1/input-requests", run_id=run_id, status=status)

    print_rows(client.call(tenant, go), ["id", "run_id", "status", "request_type", "prompt"],
               as_json)


@inputs_app.command("answer")
def inputs_answer(
    request: Annotated[str, typer.Argument(help="The request's id (or a start of it).")],
    response: Annotated[
        str, typer.Argument(help="The answer: JSON (checked against the request's schema), "
                            "or plain text.")
    ],
    tenant: TenantRef = None,
) -> None:
    """Answer an input request: the task that asked goes on from where it was."""
    try:
        value: Any = json.loads(response)
    except ValueError:
        value = response

    async def go(api: client.Api) -> Any:
        ref = await api.full_id("/v1/input-requests", request, "input request")
        return await api.send("POST", f"/v1/input-requests/{ref}/answer", {"response": value})

    done = client.call(tenant, go)
    typer.echo(f"input request {done['id']} {done['status']}")
