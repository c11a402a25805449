"""HTTP: agent-to-agent messages: send, list, show, ack, nack; dead messages and
requeue; an instance's inbox by long-poll or Server-Sent Events; topic subscriptions.

`POST /v1/messages` is shared with the gateway's Anthropic Messages API: a request that
carries `anthropic-version` (every Anthropic SDK sends it, Anthropic's API requires it)
goes to the gateway, any other sends an agent message."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Depends, FastAPI, Query, Response
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope

from agentplane.auth.deps import DB, IdPrefix, Principal, conn_for, requires
from agentplane.messages import inbox, service
from agentplane.messages.models import (
    Ack,
    DeadPage,
    DeliveryStatus,
    Message,
    MessageIn,
    MessagePage,
    Nack,
    Received,
    Subscription,
)

READ, WRITE = "messages:read", "messages:write"  # the dashboard checks the same
ReadConn = conn_for(READ)
WriteConn = conn_for(WRITE)
Writer = Annotated[Principal, Depends(requires(WRITE))]


class NotAnthropic(APIRoute):
    """Matches only requests that are not Anthropic Messages API calls."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if any(name == b"anthropic-version" for name, _ in scope.get("headers", ())):
            return Match.NONE, {}
        return super().matches(scope)


send_router = APIRouter(tags=["messages"], route_class=NotAnthropic)
router = APIRouter(tags=["messages"])


@send_router.post("/v1/messages", status_code=201)
async def send_message(body: MessageIn, conn: WriteConn, principal: Writer) -> Message:
    """Send to `to`: {"agent": slug}, {"instance": id}, {"topic": name} or
    {"broadcast": true} (optionally with "project"). Delivered only once committed."""
    return await service.send_one(conn, principal.tenant_id, body)


@router.get("/v1/messages")
async def list_messages(
    conn: ReadConn,
    agent: Annotated[str | None, Query(max_length=50, description="sent by or to it")] = None,
    sender: Annotated[str | None, Query(max_length=50, description="sent by it")] = None,
    recipient: Annotated[str | None, Query(max_length=50, description="sent to it")] = None,
    type: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[DeliveryStatus | None, Query(description="a copy in this status")] = None,
    correlation_id: Annotated[str | None, Query(max_length=255)] = None,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    id_prefix: IdPrefix = None,
) -> MessagePage:
    return await service.list_(conn, agent=agent, sender=sender, recipient=recipient,
                               type_=type, status=status, correlation_id=correlation_id,
                               cursor=cursor, limit=limit, id_prefix=id_prefix)


@router.get("/v1/messages/counts")
async def message_counts(conn: ReadConn) -> dict[str, int]:
    """Copies by status (`expired`: their time to live passed before anyone took them)."""
    return await service.counts(conn)


@router.get("/v1/messages/{message_id}")
async def get_message(message_id: UUID, conn: ReadConn) -> Message:
    """The message with each copy: its receiver, status, attempts and history."""
    return await service.get(conn, message_id)


@router.post("/v1/messages/{message_id}/ack", status_code=204)
async def ack_message(message_id: UUID, body: Ack, conn: WriteConn) -> Response:
    """Processed. 409 when the copy is not leased to `instance` (its lease passed and it
    went back, another instance holds it, or it was acked already)."""
    await service.ack_one(conn, message_id, body.instance)
    return Response(status_code=204)


@router.post("/v1/messages/{message_id}/nack")
async def nack_message(message_id: UUID, body: Nack, conn: WriteConn) -> dict[str, str]:
    """Not processed: delivered again after a backoff, or dead once its retries are spent."""
    return {"status": await service.nack(conn, message_id, body.instance, body.error,
                                         body.delay_s)}


@router.get("/v1/dead-messages")
async def dead_messages(
    conn: ReadConn,
    cursor: Annotated[str | None, Query(max_length=500)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    id_prefix: IdPrefix = None,
) -> DeadPage:
    return await service.dead(conn, cursor, limit, id_prefix)


@router.post("/v1/dead-messages/{delivery_id}/requeue")
async def requeue_message(delivery_id: UUID, conn: WriteConn) -> Message:
    """Due again now, its attempts and time to live counted afresh."""
    return await service.requeue(conn, delivery_id)


@router.get("/v1/agents/{slug}/instances/{instance_id}/messages")
async def receive(
    slug: str,
    instance_id: UUID,
    db: DB,
    principal: Writer,
    wait: Annotated[float, Query(ge=0, le=60, description="seconds to wait for one")] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 10,
    lease_s: Annotated[float, Query(ge=1, le=3600)] = 30,
) -> list[Received]:
    """Long-poll: lease what is ready for the instance, waiting up to `wait` seconds.
    Ack or nack each before `lease_s` passes, else it is delivered again."""
    agent_id = await _receiver(db, principal.tenant_id, slug, instance_id)
    return await inbox.receive(db, principal.tenant_id, agent_id, instance_id, wait_s=wait,
                               limit=limit, lease_s=lease_s)


@router.get("/v1/agents/{slug}/instances/{instance_id}/messages/stream",
            response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def receive_stream(
    slug: str,
    instance_id: UUID,
    db: DB,
    principal: Writer,
    lease_s: Annotated[float, Query(ge=1, le=3600)] = 30,
) -> StreamingResponse:
    """Server-Sent Events: each message leased to the instance as it comes (`event:
    message`, its id the message id); ack each with POST /v1/messages/{id}/ack."""
    agent_id = await _receiver(db, principal.tenant_id, slug, instance_id)

    async def frames() -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"
        while True:
            got = await inbox.receive(db, principal.tenant_id, agent_id, instance_id,
                                      wait_s=15, limit=50, lease_s=lease_s)
            if not got:
                yield b": keep-alive\n\n"
            for m in got:
                yield (f"id: {m.id}\nevent: message\ndata: {m.model_dump_json()}\n\n").encode()

    return StreamingResponse(frames(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _receiver(db: Any, tenant_id: UUID, slug: str, instance_id: UUID) -> UUID:
    async with db.tenant_connection(tenant_id) as conn:
        return await service.receiver(conn, slug, instance_id)


@router.post("/v1/agents/{slug}/instances/{instance_id}/subscriptions", status_code=201)
async def subscribe(slug: str, instance_id: UUID, body: Subscription,
                    conn: WriteConn) -> dict[str, list[str]]:
    """The instance gets a copy of every message sent to the topic from now on."""
    return {"topics": await service.subscribe(conn, slug, instance_id, body.topic)}


@router.delete("/v1/agents/{slug}/instances/{instance_id}/subscriptions/{topic}",
               status_code=204)
async def unsubscribe(slug: str, instance_id: UUID, topic: str, conn: WriteConn) -> Response:
    await service.unsubscribe(conn, slug, instance_id, topic)
    return Response(status_code=204)


def install(app: FastAPI) -> None:
    """The routes, the sending one ahead of the gateway's POST /v1/messages."""
    app.include_router(router)
    app.include_router(send_router)
    sending = app.router.routes.pop()
    app.router.routes.insert(0, sending)

