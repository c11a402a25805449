"""`agentplane providers list|add|test`: the provider registry from the command line."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.table import Table

from agentplane.db.pool import Database
from agentplane.errors import ValidationFailed
from agentplane.llm import service
from agentplane.llm.models import ProviderCreate
from agentplane.tenancy import service as tenancy
from agentplane.tenancy.cli import TenantRef, with_database
from agentplane.terminal import console

providers_app = typer.Typer(help="LLM providers of a tenant.", no_args_is_help=True)
out = console()


@providers_app.command("list")
def providers_list(tenant: TenantRef = None) -> None:
    """List the tenant's providers and the built-in ones (keys are never shown)."""

    async def run(db: Database):
        tenant_id = await tenancy.resolve_tenant_admin(db, tenant)
        async with db.tenant_connection(tenant_id) as conn:
            return await service.list_providers(conn)

    table = Table("name", "type", "base url", "model", "key", "enabled", "health", "ms")
    for p in with_database(run):
        table.add_row(
            p.name + (" (built-in)" if p.builtin else ""),
            p.type,
            p.base_url or "-",
            p.model or "-",
            "set" if p.has_api_key else "-",
            "yes" if p.enabled else "no",
            p.health_status,
            str(p.response_time),
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
        body = ProviderCreate(
            name=name,
            type=type,
            base_url=base_url,
            model=model,
            api_key=key,
            weight=weight,
            config=json.loads(config),
        )
    except json.JSONDecodeError:
        raise ValidationFailed("config is not JSON") from None
    except ValidationError as exc:
        fields = ", ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValidationFailed(f"invalid {fields}") from None

    async def run(db: Database):
        tenant_id = await tenancy.resolve_tenant_admin(db, tenant)
        async with db.tenant_connection(tenant_id) as conn:
            return await service.create_provider(conn, db.settings, body)

    p = with_database(run)
    out.print(f"provider {p.name} ({p.type}) added: {p.id}", highlight=False)


@providers_app.command("test")
def providers_test(
    name: Annotated[str, typer.Argument(help="The provider to call.")],
    model: Annotated[str | None, typer.Option(help="Default: the provider's model.")] = None,
    tenant: TenantRef = None,
) -> None:
    """Make one short call (through budgets and recording, in one attempt); print latency,
    tokens and cost."""
    from agentplane.llm.adapters.base import ChatRequest
    from agentplane.llm.calls import LLM, CallContext

    async def run(db: Database):
        tenant_id = await tenancy.resolve_tenant_admin(db, tenant)
        request = ChatRequest(
            messages=[{"role": "user", "content": "Reply with one short sentence."}],
            model=model,
            max_tokens=16,
        )
        return await LLM(db, db.settings).complete(
            CallContext(tenant_id=tenant_id), request, provider=name, attempts=1
        )

    o = with_database(run)
    cost = "unknown" if o.cost_usd is None else f"${o.cost_usd.normalize():f}"
    out.print(
        f"{o.provider} {o.result.model}: {o.latency_ms} ms, {o.result.prompt_tokens} prompt + "
        f"{o.result.completion_tokens} completion tokens, cost {cost}",
        highlight=False,
    )
    out.print(o.result.content, highlight=False)
