"""HTTP: a run's history, its live stream (Server-Sent Events), the tenant's stream."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

from agentplane.auth.deps import DB, Principal, requires
from agentplane.errors import ValidationFailed
from agentplane.events import service
from agentplane.events.models import Event, EventPage
from agentplane.events.stream import hub_for

router = APIRouter(tags=["events"])

Reader = Annotated[Principal, Depends(requires("events:read"))]
MAX_SEQ = 2**63 - 1
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.get("/v1/runs/{run_id}/events")
async def run_events(
    run_id: UUID,
    principal: Reader,
    db: DB,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ, description="Events after this seq.")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    type: Annotated[
        list[str] | None, Query(description="Event types; `task.*` matches a family.")
    ] = None,
    tail: Annotated[
        int | None, Query(ge=1, le=1000, description="Only the run's last `tail` events.")
    ] = None,
) -> EventPage:
    """A run's stored events in sequence order; page with `after=next_after`."""
    return await service.history(
        db, tenant_id=principal.tenant_id, run_id=run_id, after=after, limit=limit, types=type,
        tail=tail,
    )


@router.get(
    "/v1/runs/{run_id}/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def run_stream(
    run_id: UUID,
    principal: Reader,
    db: DB,
    after: Annotated[int, Query(ge=0, le=MAX_SEQ)] = 0,
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-Sent Events: the run's events after `after` (or `Last-Event-ID`, which
    wins, as a reconnecting EventSource sends it with the original URL), then live
    ones; each event's `id` is its sequence number. Ends after the run's terminal
    event. Unstored `llm.delta` events come without an `id`."""
    if last_event_id is not None:
        after = parse_last_event_id(last_event_id)
    batches = await service.open_stream(
        db,
        hub_for(db),
        tenant_id=principal.tenant_id,
        run_id=run_id,
        after=after,
        keepalive=db.settings.events_keepalive_seconds,
    )
    return StreamingResponse(
        sse_batches(batches), media_type="text/event-stream", headers=SSE_HEADERS
    )


@router.get(
    "/v1/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def tenant_stream(principal: Reader, db: DB) -> StreamingResponse:
    """Server-Sent Events: run-level events (`run.*`) of all the tenant's runs, live.
    Not resumable as a whole: after a reconnect, read each run's history."""
    events = service.follow_tenant(
        db,
        hub_for(db),
        tenant_id=principal.tenant_id,
        keepalive=db.settings.events_keepalive_seconds,
    )
    return StreamingResponse(
        sse(events, with_ids=False), media_type="text/event-stream", headers=SSE_HEADERS
    )


def parse_last_event_id(value: str) -> int:
    text = value.strip()
    if not text.isdigit() or int(text) > MAX_SEQ:
        raise ValidationFailed(
            "Last-Event-ID must be a sequence number (a non-negative integer)",
            errors=[{"field": "header.last-event-id", "message": "not a sequence number"}],
        )
    return int(text)


RETRY = b"retry: 1000\n\n"
KEEPALIVE = b": keep-alive\n\n"


async def sse(events: AsyncIterator[Event | str], *, with_ids: bool = True) -> AsyncIterator[bytes]:
    yield RETRY
    async for item in events:
        if isinstance(item, str):
            yield KEEPALIVE
        elif with_ids or item.seq is None:
            yield item.frame
        else:
            yield f"event: {item.type}\ndata: {item.encoded}\n\n".encode()


async def sse_batches(batches: AsyncIterator[list[Event] | str]) -> AsyncIterator[bytes]:
    """One write per wake-up, however many events it brought; each event's frame is
    encoded once, whatever the number of its followers."""
    yield RETRY
    async for batch in batches:
        if isinstance(batch, str):
            yield KEEPALIVE
        elif len(batch) == 1:
            yield batch[0].frame
        else:
            yield b"".join([event.frame for event in batch])
