"""`agentplane events <run-id> [--follow]`: a run's event log.

Locally it reads the database directly, as the operator (like `agentplane tenant`): no
tenant or key is needed. With --url it goes through the API: the history's pages, and
the run's Server-Sent Events stream with --follow.
"""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

import typer

from agentplane.db.pool import Database
from agentplane.errors import ValidationFailed
from agentplane.events import service
from agentplane.events.models import Event
from agentplane.events.stream import EventHub


def events(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing live events until the run ends.")
    ] = False,
    after: Annotated[int, typer.Option(min=0, help="Start after this sequence number.")] = 0,
    type: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Only these types (task.* ok).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Print a run's events in sequence order; with --follow, stream them live."""
    from agentplane.db.setup import with_database

    try:
        run = UUID(run_id)
    except ValueError:
        raise ValidationFailed(f"not a run id: {run_id!r}") from None
    if follow and type:
        raise ValidationFailed("--type cannot be combined with --follow")

    async def show(db: Database) -> None:
        tenant_id = await service.run_tenant(db, run)
        if follow:
            hub = EventHub(db)
            try:
                async for item in service.follow(
                    db, hub, tenant_id=tenant_id, run_id=run, after=after, keepalive=5.0
                ):
                    if isinstance(item, Event):
                        _print(item, as_json)
            finally:
                await hub.stop()
            return
        cursor = after
        while True:
            page = await service.history(
                db, tenant_id=tenant_id, run_id=run, after=cursor, limit=1000, types=type
            )
            for event in page.events:
                _print(event, as_json)
            if page.next_after is None:
                return
            cursor = page.next_after

    from agentplane import client

    if client.remote():
        client.call(None, lambda api: _over_http(api, run, follow, after, type, as_json))
        return
    with_database(show)


async def _over_http(
    api, run: UUID, follow: bool, after: int, types: list[str] | None, as_json: bool
) -> None:
    if follow:
        async with api.http.stream(
            "GET", f"/v1/runs/{run}/events/stream", params={"after": after}, timeout=None
        ) as r:
            if r.status_code >= 400:
                await r.aread()
                await api.request("GET", f"/v1/runs/{run}")  # raises the API's problem
            async for line in r.aiter_lines():
                if line.startswith("data:"):
                    _print(Event.model_validate_json(line[5:]), as_json)
        return
    cursor: int | None = after
    while cursor is not None:
        page = await api.get(f"/v1/runs/{run}/events", after=cursor, limit=1000, type=types)
        for item in page["events"]:
            _print(Event.model_validate(item), as_json)
        cursor = page["next_after"]


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
