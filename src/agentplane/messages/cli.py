"""`agentplane messages send|list|show|tail|dead|requeue`: agent-to-agent messages over
the HTTP API (agentplane.client), on a shared server or in this process as the owner of
the tenant named by --tenant (AGENTPLANE_TENANT)."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

from agentplane import client, ids
from agentplane.errors import ValidationFailed
from agentplane.tenancy.cli import TenantRef
from agentplane.terminal import print_rows

messages_app = typer.Typer(help="Messages between agents: send, list, show, follow, requeue.",
                           no_args_is_help=True)

JsonOut = Annotated[bool, typer.Option("--json", help="JSON instead of a table.")]
Agent = Annotated[str | None, typer.Option(help="Sent by or to this agent (its slug).")]
Sender = Annotated[str | None, typer.Option(help="Sent by this agent (its slug).")]
Recipient = Annotated[str | None, typer.Option(help="Sent to this agent (its slug).")]
Type = Annotated[str | None, typer.Option("--type", help="Only messages of this type.")]
Status = Annotated[str | None, typer.Option(
    help="A copy in this status: pending, leased, acked, dead or expired.")]
Correlation = Annotated[str | None, typer.Option("--correlation-id", help="Only this exchange.")]
Limit = Annotated[int, typer.Option(min=1, max=500)]
Cursor = Annotated[str | None, typer.Option(help="The next page (--json's next_cursor).")]
# A message sent in a transaction that commits late has an earlier created_at than ones
# already shown: `tail` looks this far back for such messages.
LATE_S = 5.0


def destination(text: str) -> dict[str, Any]:
    """--to of send: agent:SLUG, instance:ID, topic:NAME, broadcast or broadcast:PROJECT."""
    kind, _, name = text.partition(":")
    if kind == "broadcast":
        return {"broadcast": True, **({"project": name} if name else {})}
    if kind in ("agent", "instance", "topic") and name:
        return {kind: name}
    raise ValidationFailed(f"--to {text!r}: use agent:SLUG, instance:ID, topic:NAME, "
                           "broadcast or broadcast:PROJECT_ID")


def payload(text: str | None) -> Any:
    """JSON, or @path for a JSON file's."""
    if text is None:
        return {}
    source = text
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise ValidationFailed(f"--payload: no file {text[1:]!r} to read")
        source = path.read_text(errors="replace")
    try:
        return json.loads(source)
    except ValueError as exc:
        raise ValidationFailed(f"--payload: not valid JSON ({exc})") from None


def addressee(to: dict[str, Any]) -> str:
    if to.get("broadcast"):
        return f"broadcast {to['project']}" if to.get("project") else "broadcast"
    kind, name = next(iter(to.items()))
    return f"{kind} {name}"


def _line(m: dict[str, Any]) -> dict[str, Any]:
    return {**m, "from": m["from_agent"] or "-", "to": addressee(m["to"]),
            "created": m["created_at"][:23].replace("T", " ")}


@messages_app.command("send")
def send(
    to: Annotated[str, typer.Option(help="agent:SLUG, instance:ID, topic:NAME, broadcast "
                                    "or broadcast:PROJECT_ID.")],
    type: Annotated[str, typer.Option("--type", help="e.g. review.request.")],
    body: Annotated[str | None, typer.Option(
        "--payload", help="JSON, or @path for a JSON file's (default: {}).")] = None,
    sender: Annotated[str | None, typer.Option(
        "--from", help="The sending agent instance's id.")] = None,
    priority: Annotated[int, typer.Option(help="0-9, higher first.")] = 1,
    correlation_id: Annotated[str | None, typer.Option(
        "--correlation-id", help="Its exchange: a reply carries the request's.")] = None,
    reply_to: Annotated[str | None, typer.Option(help="The instance replies go to.")] = None,
    ack: Annotated[bool, typer.Option(help="Whether the receiver must ack it.")] = True,
    ttl: Annotated[int | None, typer.Option(help="Seconds it may wait to be taken.")] = None,
    max_retries: Annotated[int, typer.Option(help="Redeliveries before it is dead.")] = 3,
    delay: Annotated[float, typer.Option(help="Seconds before it is due.")] = 0,
    run: Annotated[str | None, typer.Option(help="The run it belongs to (its events).")] = None,
    as_json: JsonOut = False,
    tenant: TenantRef = None,
) -> None:
    """Send a message; each live receiver it names gets its own copy."""
    message = {"to": destination(to), "type": type, "payload": payload(body),
               "priority": priority, "correlation_id": correlation_id, "reply_to": reply_to,
               "requires_ack": ack, "ttl_s": ttl, "max_retries": max_retries,
               "delay_s": delay, "run_id": run,
               "from": {"instance": sender} if sender else None}
    message = {k: v for k, v in message.items() if v is not None}

    async def go(api: client.Api) -> Any:
        return await api.send("POST", "/v1/messages", message)

    sent = client.call(tenant, go)
    if as_json:
        typer.echo(json.dumps(sent, indent=2))
        return
    copies = len(sent["deliveries"] or [])
    typer.echo(f"message {sent['id']} sent to {addressee(sent['to'])} "
               f"({copies} {'copy' if copies == 1 else 'copies'})")


@messages_app.command("list")
def list_(
    agent: Agent = None,
    sender: Sender = None,
    recipient: Recipient = None,
    type: Type = None,
    status: Status = None,
    correlation_id: Correlation = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: JsonOut = False,
    tenant: TenantRef = None,
) -> None:
    """Messages, newest first, with their copies' least advanced status."""

    async def go(api: client.Api) -> Any:
        return await api.get("/v1/messages", agent=agent, sender=sender, recipient=recipient,
                             type=type, status=status, correlation_id=correlation_id,
                             limit=limit, cursor=cursor)

    found = client.call(tenant, go)
    _page(found, as_json, [_line(m) for m in found["items"]],
          ["id", "type", "from", "to", "status", "priority", "created"])


@messages_app.command("show")
def show(message: Annotated[str, typer.Argument(help="The message's id, or a unique start of it.")],
         tenant: TenantRef = None) -> None:
    """A message with each copy (its receiver, status, attempts, history), as JSON."""
    async def go(api: client.Api) -> Any:
        ref = await api.full_id("/v1/messages", message, "message")
        return await api.get(f"/v1/messages/{ref}")

    typer.echo(json.dumps(client.call(tenant, go), indent=2))


@messages_app.command("tail")
def tail(
    agent: Agent = None,
    sender: Sender = None,
    recipient: Recipient = None,
    type: Type = None,
    last: Annotated[int, typer.Option(min=0, max=500, help="Show the last N first.")] = 10,
    count: Annotated[int | None, typer.Option(
        min=1, help="Stop after printing this many (default: until interrupted).")] = None,
    interval: Annotated[float, typer.Option(min=0.1, max=60, help="Seconds between looks.")]
    = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
    tenant: TenantRef = None,
) -> None:
    """Print messages as they are sent (reading only: nothing is leased or acked)."""
    filters = {"agent": agent, "sender": sender, "recipient": recipient, "type": type}

    def shown(m: dict[str, Any]) -> None:
        if as_json:
            typer.echo(json.dumps(m))
            return
        row = _line(m)
        typer.echo(f"{row['created']}  {m['type']}  {row['from']} -> {row['to']}  "
                   f"{m['status']}  {m['id']}")

    async def go(api: client.Api) -> None:
        follower = Follower(api, filters)
        printed = 0
        for m in await follower.start(last):
            shown(m)
            printed += 1
        while count is None or printed < count:
            await asyncio.sleep(interval)
            for m in await follower.newer():
                shown(m)
                printed += 1
                if count is not None and printed >= count:
                    return

    client.call(tenant, go)


class Follower:
    """What /v1/messages lists that was not yet seen, oldest first."""

    def __init__(self, api: client.Api, filters: dict[str, Any]) -> None:
        self.api, self.filters = api, filters
        self.seen: dict[str, datetime] = {}
        self.mark: datetime | None = None

    async def start(self, last: int) -> list[dict[str, Any]]:
        page = await self.api.get("/v1/messages", **self.filters, limit=max(last, 1))
        items = page["items"]
        self._saw(items)
        return items[:last][::-1]

    async def newer(self) -> list[dict[str, Any]]:
        fresh: list[dict[str, Any]] = []
        floor = self.mark - timedelta(seconds=LATE_S) if self.mark else None
        cursor = None
        while True:
            page = await self.api.get("/v1/messages", **self.filters, limit=100, cursor=cursor)
            for m in page["items"]:
                if floor is not None and _at(m) < floor:
                    cursor = None
                    break
                if m["id"] not in self.seen:
                    fresh.append(m)
            else:
                cursor = page["next_cursor"]
            if cursor is None:
                break
        self._saw(fresh)
        return fresh[::-1]

    def _saw(self, items: list[dict[str, Any]]) -> None:
        for m in items:
            self.seen[m["id"]] = _at(m)
        if self.seen:
            self.mark = max(self.seen.values())
            floor = self.mark - timedelta(seconds=2 * LATE_S)
            self.seen = {k: v for k, v in self.seen.items() if v >= floor}


def _at(m: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(m["created_at"])


@messages_app.command("dead")
def dead(
    limit: Limit = 50,
    cursor: Cursor = None,
    as_json: JsonOut = False,
    tenant: TenantRef = None,
) -> None:
    """Copies whose retries are spent, newest first (requeue one by its delivery id)."""

    async def go(api: client.Api) -> Any:
        return await api.get("/v1/dead-messages", limit=limit, cursor=cursor)

    found = client.call(tenant, go)
    rows = [{**d, "message": d["message"]["id"], "type": d["message"]["type"],
             "error": (d["last_error"] or "")[:60]} for d in found["items"]]
    _page(found, as_json, rows, ["delivery_id", "message", "type", "agent", "attempts", "error"])


def _page(found: dict[str, Any], as_json: bool, rows: list[dict], columns: list[str]) -> None:
    """A page as the API answered it (with its next_cursor), or its rows as a table."""
    if as_json:
        typer.echo(json.dumps(found, indent=2))
    else:
        print_rows(rows, columns, False)


@messages_app.command("requeue")
def requeue(delivery: Annotated[str, typer.Argument(
                help="The dead copy's delivery id, or a unique start of it.")],
            tenant: TenantRef = None) -> None:
    """Deliver a dead copy again now, its attempts and time to live counted afresh."""
    async def starting(api: client.Api, prefix: str) -> list[str]:
        found = await api.get("/v1/dead-messages", id_prefix=prefix, limit=2)
        return [d["delivery_id"] for d in found["items"]]

    async def go(api: client.Api) -> Any:
        ref = await ids.resolve(delivery, "dead message", lambda p: starting(api, p))
        return await api.send("POST", f"/v1/dead-messages/{ref}/requeue")

    done = client.call(tenant, go)
    typer.echo(f"message {done['id']} requeued ({done['status']})")
