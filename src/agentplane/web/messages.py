"""Agent-to-agent messages: the tenant's messages filtered as GET /v1/messages filters
them, a message with each receiver's copy and its history, and dead messages with
requeue. Roles as in the API (messages/api.py's READ and WRITE)."""

from __future__ import annotations

from typing import Annotated, get_args
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from agentplane.errors import NotFound, ValidationFailed
from agentplane.messages import service
from agentplane.messages.api import READ, WRITE
from agentplane.messages.models import DeliveryStatus
from agentplane.web import http
from agentplane.web.http import Posted, WebRoute, WebUser
from agentplane.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
Action = Annotated[Posted, Depends(http.posted)]
PAGE = 50
FILTERS = {"agent": 50, "type": 64, "status": 20, "correlation_id": 255}
STATUSES = list(get_args(DeliveryStatus))


@router.get("/messages")
async def list_messages(request: Request, user: User) -> HTMLResponse:
    http.need(user, READ)
    q = request.query_params
    filters = {k: q.get(k, "").strip() for k in FILTERS}
    problems: dict[str, str] = {}
    for k, longest in FILTERS.items():
        if len(filters[k]) > longest:
            problems[k], filters[k] = f"at most {longest} characters", filters[k][:longest]
    if filters["status"] and filters["status"] not in STATUSES:
        problems["status"] = "not a delivery status"
    messages = dead = None
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        counts = await service.counts(conn)
        if not problems:
            try:
                messages = await service.list_(
                    conn, agent=filters["agent"] or None, type_=filters["type"] or None,
                    status=filters["status"] or None,
                    correlation_id=filters["correlation_id"] or None,
                    cursor=q.get("cursor", "")[:500] or None, limit=PAGE)
            except NotFound:
                problems["agent"] = "no agent of that slug"
            except ValidationFailed as exc:
                problems["cursor"] = exc.detail
        dead = await service.dead(conn, q.get("dead_cursor", "")[:500] or None, PAGE)
    return await page(request, user, "messages.html", title="Messages",
                      status=422 if problems else 200, messages=messages, dead=dead,
                      counts=counts, filters=filters, problems=problems,
                      query=urlencode({k: v for k, v in filters.items() if v}),
                      statuses=STATUSES, writer=user.can(WRITE))


@router.get("/messages/{ref}")
async def show_message(request: Request, user: User, ref: str) -> HTMLResponse:
    http.need(user, READ)
    message_id = http.parse_uuid(ref, "message")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        message = await service.get(conn, message_id)
    return await page(request, user, "message.html", title=f"Message {message.type}",
                      msg=message, writer=user.can(WRITE))


@router.post("/messages/dead/{ref}/requeue")
async def requeue(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, WRITE)
    delivery_id = http.parse_uuid(ref, "dead message")
    async with http.db_of(request).tenant_connection(action.user.tenant_id) as conn:
        message = await service.requeue(conn, delivery_id)
    return http.redirect(request, f"/messages/{message.id}?notice=message-requeued")
