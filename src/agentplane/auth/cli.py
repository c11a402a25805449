"""`agentplane key create|list|revoke`: API keys without the API (the first key of a
fresh install comes from here)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated
from uuid import UUID

import typer
from pydantic import ValidationError
from rich.table import Table

from agentplane import clock, ids
from agentplane.auth import keys
from agentplane.auth import scopes as sc
from agentplane.auth.models import KEY_RATE_LIMIT_PER_HOUR, ApiKeyIn
from agentplane.db.pool import Database
from agentplane.db.setup import with_database
from agentplane.errors import NotFound, ValidationFailed
from agentplane.tenancy import store as tenancy_store
from agentplane.tenancy import tenants, users
from agentplane.tenancy.cli import TenantRef
from agentplane.terminal import console

key_app = typer.Typer(help="API keys (administration without the API).", no_args_is_help=True)


@key_app.command("create")
def key_create(
    email: Annotated[str, typer.Option(help="The member who owns the key.")],
    name: Annotated[str, typer.Option(help="What the key is for.")],
    scope: Annotated[
        list[str] | None,
        typer.Option(
            help="A scope (repeatable); default: "
            + ", ".join(sc.DEFAULT_KEY_SCOPES)
            + "; 'all' for everything the owner's role grants."
        ),
    ] = None,
    rate_limit_per_hour: Annotated[int, typer.Option(min=0)] = KEY_RATE_LIMIT_PER_HOUR,
    rpm: Annotated[
        int | None, typer.Option(min=1, help="LLM calls per minute (default: no limit).")
    ] = None,
    tpm: Annotated[
        int | None, typer.Option(min=1, help="LLM tokens per minute (default: no limit).")
    ] = None,
    expires_in_days: Annotated[int | None, typer.Option(min=1)] = None,
    tenant: TenantRef = None,
) -> None:
    """Create an API key and print it (once: only its hash is stored)."""
    expires = clock.now() + timedelta(days=expires_in_days) if expires_in_days else None

    async def run(db: Database):
        tenant_id = await tenants.resolve_tenant_admin(db, tenant)
        async with db.tenant_connection(tenant_id) as conn:
            user_id = await users.find_user_id(conn, email)
            member = user_id and await tenancy_store.get_member(conn, user_id)
        if not member:
            raise NotFound(f"{email} is not a member of {tenant}")
        scopes = list(scope or sc.DEFAULT_KEY_SCOPES)
        if scopes == ["all"]:
            scopes = sorted(sc.granted(member["role"], member["permissions"]))
        try:
            body = ApiKeyIn(
                name=name,
                scopes=scopes,
                rate_limit_per_hour=rate_limit_per_hour,
                llm_rpm=rpm,
                llm_tpm=tpm,
                expires_at=expires,
                user_id=user_id,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            field = ".".join(str(p) for p in first["loc"])
            raise ValidationFailed(f"{field}: {first['msg']}") from None
        return await keys.create_key(db, tenant_id, body, actor=None)

    row, key = with_database(run)
    typer.echo(f"key {row['id']} ({row['key_prefix']}…) scopes: {', '.join(row['scopes'])}")
    typer.echo("this is the only time the key is shown:", err=True)
    typer.echo(key)


@key_app.command("list")
def key_list(
    include_revoked: Annotated[bool, typer.Option(help="Show revoked keys too.")] = False,
    tenant: TenantRef = None,
) -> None:
    """List a tenant's API keys (prefixes only; secrets are never stored)."""

    async def run(db: Database):
        tenant_id = await tenants.resolve_tenant_admin(db, tenant)
        return await keys.list_keys(db, tenant_id, include_revoked)

    rows = with_database(run)
    table = Table("id", "prefix", "name", "scopes", "last used", "status")
    for r in rows:
        status = "revoked" if not r["is_active"] else "active"
        if r["is_active"] and r["expires_at"] and r["expires_at"] <= clock.now():
            status = "expired"
        table.add_row(
            str(r["id"]),
            r["key_prefix"],
            r["name"],
            " ".join(r["scopes"]),
            str(r["last_used"] or "-"),
            status,
        )
    console().print(table)


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(
        help="The key's id (see `key list`), or a unique start of it.")],
    tenant: TenantRef = None,
) -> None:
    """Revoke an API key: it stops authenticating at once."""

    async def run(db: Database):
        tenant_id = await tenants.resolve_tenant_admin(db, tenant)

        async def starting(prefix: str) -> list[str]:
            found = await keys.list_keys(db, tenant_id, include_revoked=True)
            return [str(k["id"]) for k in found if k["id"].hex.startswith(prefix)]

        whole = await ids.resolve(key_id, "key", starting)
        return await keys.revoke_key(db, tenant_id, UUID(whole), actor=None)

    row = with_database(run)
    typer.echo(f"key {row['id']} ({row['key_prefix']}…) revoked")
