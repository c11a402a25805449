"""`agentplane events <run> [--follow]`: a run's event log, over the HTTP API.

Locally the run's own tenant is used when the whole id is given (an operator needs no
key), else --tenant. The history pages go through the API either way; a local --follow
reads the event hub in this process, because an in-process (ASGI) client does not
stream, while with --url it reads the run's Server-Sent Events stream.
"""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

import typer

from agentplane import client, ids
from agentplane.db.pool import Database
from agentplane.errors import ValidationFailed
from agentplane.events import service
from agentplane.events.models import Event
from agentplane.events.stream import EventHub
from agentplane.tenancy.cli import TenantRef


def events(
    run: Annotated[str, typer.Argument(help="The run's id (or a unique start of it).")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing live events until the run ends.")
    ] = False,
    after: Annotated[int, typer.Option(min=0, help="Start after this sequence number.")] = 0,
    type: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only these types (task.* ok).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    tenant: TenantRef = None,
) -> None:
    """Print a run's events in sequence order; with --follow, stream them live."""
    from agentplane.db.setup import with_database

    if follow and type:
        raise ValidationFailed("--type cannot be combined with --follow")
    ids.hex_digits(run, "run", None)  # a bad id is refused before any tenant is looked for

    async def shown(api: client.Api) -> None:
        run_id = UUID(await api.full_id("/v1/runs", run, "run"))
        if follow and api.remote:
            await _stream(api, run_id, after, as_json)
        elif follow:
            await _follow_here(api.db, api.principal.tenant_id, run_id, after, as_json)
        else:
            await _history(api, run_id, after, type, as_json)

    if client.remote():
        client.call(None, shown)
        return

    async def here(db: Database) -> None:
        async with client.connected(str(await _tenant_of(db, run, tenant)), db.settings,
                                    db) as api:
            await shown(api)

    with_database(here)


async def _tenant_of(db: Database, run_ref: str, tenant: str | None) -> UUID:
    """The tenant whose run this is: the run's own for a whole id, else --tenant's."""
    from agentplane.tenancy.tenants import resolve_tenant_admin

    run = ids.whole(run_ref)
    if run is not None and tenant is None:
        return await service.run_tenant(db, run)
    return await resolve_tenant_admin(db, tenant)


async def _history(
    api: client.Api, run: UUID, after: int, types: list[str] | None, as_json: bool
) -> None:
    cursor: int | None = after
    while cursor is not None:
        page = await api.get(f"/v1/runs/{run}/events", after=cursor, limit=1000, type=types)
        for item in page["events"]:
            _print(Event.model_validate(item), as_json)
        cursor = page["next_after"]


async def _stream(api: client.Api, run: UUID, after: int, as_json: bool) -> None:
    async with api.http.stream(
        "GET", f"/v1/runs/{run}/events/stream", params={"after": after}, timeout=None
    ) as r:
        if r.status_code >= 400:
            await r.aread()
            await api.request("GET", f"/v1/runs/{run}")  # raises the API's problem
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                _print(Event.model_validate_json(line[5:]), as_json)


async def _follow_here(db: Any, tenant_id: UUID, run: UUID, after: int, as_json: bool) -> None:
    hub = EventHub(db)
    try:
        async for item in service.follow(
            db, hub, tenant_id=tenant_id, run_id=run, after=after, keepalive=5.0
        ):
            if isinstance(item, Event):
                _print(item, as_json)
    finally:
        await hub.stop()


def _print(event: Event, as_json: bool) -> None:
    if as_json:
        typer.echo(event.model_dump_json())
        return
    seq = "-" if event.seq is None else str(event.seq)
    when = event.created_at.astimezone().strftime("%H:%M:%S.%f")[:-3]
    parts = [f"{seq:>6}", when, f"{event.type:<20}", event.agent or "-"]
    if event.message:
        parts.append(event.message)
    typer.echo("  ".join(parts), nl=True)
