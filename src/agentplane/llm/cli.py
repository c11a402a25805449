"""`agentplane providers list|add|test`: a tenant's LLM providers, over the HTTP API
(agentplane.client): on a shared server with --url, else in this process as the owner of
--tenant."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from agentplane import client
from agentplane.errors import ValidationFailed
from agentplane.tenancy.cli import TenantRef
from agentplane.terminal import console

providers_app = typer.Typer(help="LLM providers of a tenant.", no_args_is_help=True)
out = console()


@providers_app.command("list")
def providers_list(
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
    tenant: TenantRef = None,
) -> None:
    """List the tenant's providers and the built-in ones (keys are never shown)."""

    async def run(api: client.Api) -> Any:
        return await api.get("/v1/llm/providers")

    found = client.call(tenant, run)
    if as_json:
        typer.echo(json.dumps(found, indent=2))
        return
    table = Table("name", "type", "base url", "model", "key", "enabled", "health", "ms")
    for p in found:
        table.add_row(
            p["name"] + (" (built-in)" if p["builtin"] else ""),
            p["type"],
            p["base_url"] or "-",
            p["model"] or "-",
            "set" if p["has_api_key"] else "-",
            "yes" if p["enabled"] else "no",
            p["health_status"],
            str(p["response_time"]),
        )
    out.print(table)


@providers_app.command("add")
def providers_add(
    name: Annotated[str, typer.Option(help="Unique in the tenant, e.g. openai.")],
    type: Annotated[str, typer.Option(help="offline, openai_compatible or anthropic.")],
    base_url: Annotated[str | None, typer.Option(help="e.g. http://localhost:11434/v1")] = None,
    model: Annotated[str | None, typer.Option(help="The default model.")] = None,
    api_key_stdin: Annotated[
        bool, typer.Option(help="Read the API key from stdin (kept out of shell history).")
    ] = False,
    weight: Annotated[float, typer.Option(min=0)] = 1.0,
    config: Annotated[str, typer.Option(help="JSON: timeout, max_retries, fallback, ...")] = "{}",
    tenant: TenantRef = None,
) -> None:
    """Add a provider; its API key is stored encrypted."""
    key = sys.stdin.readline().strip() if api_key_stdin else None
    if api_key_stdin and not key:
        raise ValidationFailed("api key: nothing was read from stdin")
    try:
        settings = json.loads(config)
    except json.JSONDecodeError:
        raise ValidationFailed("config is not JSON") from None
    body = {"name": name, "type": type, "base_url": base_url, "model": model, "api_key": key,
            "weight": weight, "config": settings}

    async def run(api: client.Api) -> Any:
        return await api.send("POST", "/v1/llm/providers",
                              {k: v for k, v in body.items() if v is not None})

    p = client.call(tenant, run)
    out.print(f"provider {p['name']} ({p['type']}) added: {p['id']}", highlight=False)


@providers_app.command("test")
def providers_test(
    name: Annotated[str, typer.Argument(help="The provider to call.")],
    model: Annotated[str | None, typer.Option(help="Default: the provider's model.")] = None,
    tenant: TenantRef = None,
) -> None:
    """Make one short call (through budgets and recording, in one attempt); print latency,
    tokens and cost."""
    async def run(api: client.Api) -> Any:
        path = f"/v1/llm/providers/{name}/test"
        return (await api.request("POST", path, params={"model": model} if model else {})).json()

    o = client.call(tenant, run)
    cost = "unknown" if o["cost_usd"] is None else f"${o['cost_usd']}"
    out.print(
        f"{o['provider']} {o['model']}: {o['latency_ms']} ms, {o['prompt_tokens']} prompt + "
        f"{o['completion_tokens']} completion tokens, cost {cost}",
        highlight=False,
    )
    out.print(o["content"], highlight=False)
