"""`agentplane agents list|show|create|update|delete`: agents over the HTTP API
(agentplane.client), from a YAML or JSON file, from flags, or both (flags win)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from agentplane import client
from agentplane.errors import ValidationFailed
from agentplane.tenancy.cli import TenantRef
from agentplane.terminal import print_rows

agents_app = typer.Typer(help="Agents: who does a workflow's tasks.", no_args_is_help=True)

Slug = Annotated[str, typer.Argument(help="The agent's id (a slug, e.g. akira-001).")]
JsonOut = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
File = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="A YAML or JSON definition (the API's fields).",
                 exists=True, dir_okay=False),
]
Name = Annotated[str | None, typer.Option(help="Display name.")]
Role = Annotated[str | None, typer.Option(help="What the agent does, e.g. 'code reviewer'.")]
Model = Annotated[str | None, typer.Option(help="provider/model, e.g. openai/gpt-4o.")]
Instructions = Annotated[str | None, typer.Option(help="Its system instructions.")]
Tools = Annotated[
    list[str] | None, typer.Option("--tool", help="A tool it may call (repeatable).")
]
Status = Annotated[str | None, typer.Option(help="active, inactive or maintenance.")]
MaxTokens = Annotated[int | None, typer.Option(help="Completion tokens per LLM call.")]


def _body(file: Path | None, **flags: Any) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if file is not None:
        import yaml

        try:
            loaded = yaml.safe_load(file.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ValidationFailed(f"{file}: not valid YAML or JSON{where}") from None
        if not isinstance(loaded, dict):
            raise ValidationFailed(f"{file}: an agent is a mapping of fields (id, name, ...)")
        body.update(loaded)
    body.update({k: v for k, v in flags.items() if v is not None})
    return body


@agents_app.command("list")
def agents_list(status: Status = None, as_json: JsonOut = False, tenant: TenantRef = None) -> None:
    """The tenant's agents with their totals."""

    async def go(api: client.Api) -> Any:
        return await api.get("/v1/agents", status=status)

    print_rows(client.call(tenant, go),
               ["id", "name", "role", "model", "status", "tools", "total_tasks_completed"],
               as_json)


@agents_app.command("show")
def agents_show(slug: Slug, tenant: TenantRef = None) -> None:
    """One agent, every field, as JSON."""

    async def go(api: client.Api) -> Any:
        return await api.get(f"/v1/agents/{slug}")

    typer.echo(json.dumps(client.call(tenant, go), indent=2))


@agents_app.command("create")
def agents_create(
    file: File = None,
    id: Annotated[str | None, typer.Option("--id", help="Its slug, e.g. akira-001.")] = None,
    name: Name = None,
    role: Role = None,
    model: Model = None,
    instructions: Instructions = None,
    tool: Tools = None,
    max_tokens: MaxTokens = None,
    tenant: TenantRef = None,
) -> None:
    """Create an agent from --file and/or flags."""
    body = _body(file, id=id, name=name, role=role, model=model, instructions=instructions,
                 tools=tool, max_tokens=max_tokens)

    async def go(api: client.Api) -> Any:
        return await api.send("POST", "/v1/agents", body)

    made = client.call(tenant, go)
    typer.echo(f"agent {made['id']} created ({made['model']})")


@agents_app.command("update")
def agents_update(
    slug: Slug,
    file: File = None,
    name: Name = None,
    role: Role = None,
    model: Model = None,
    instructions: Instructions = None,
    tool: Tools = None,
    status: Status = None,
    max_tokens: MaxTokens = None,
    tenant: TenantRef = None,
) -> None:
    """Change the fields given (from --file and/or flags); the others stay."""
    body = _body(file, name=name, role=role, model=model, instructions=instructions,
                 tools=tool, status=status, max_tokens=max_tokens)
    body.pop("id", None)
    if not body:
        raise ValidationFailed("nothing to change: give --file or a field's flag")

    async def go(api: client.Api) -> Any:
        return await api.send("PATCH", f"/v1/agents/{slug}", body)

    done = client.call(tenant, go)
    typer.echo(f"agent {done['id']} updated")


@agents_app.command("delete")
def agents_delete(slug: Slug, tenant: TenantRef = None) -> None:
    """Delete an agent that has run no task (else set --status inactive)."""

    async def go(api: client.Api) -> Any:
        return await api.send("DELETE", f"/v1/agents/{slug}")

    client.call(tenant, go)
    typer.echo(f"agent {slug} deleted")
