"""Request id, access log and HTTP metrics, as plain ASGI middleware (cheap on the hot path)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentplane import metrics

log = logging.getLogger("agentplane.access")
_VALID_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class RequestIdMiddleware:
    """Echoes a sane X-Request-ID or makes one; puts it on every response and log line,
    with the RateLimit-* headers of an authenticated request (see agentplane.auth.deps)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_id(scope) or uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                identity = state.get("identity")
                if identity is not None:
                    headers += [
                        (b"ratelimit-limit", b"%d" % identity.limit),
                        (b"ratelimit-remaining", b"%d" % identity.remaining),
                        (b"ratelimit-reset", b"%d" % identity.reset_seconds),
                    ]
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            metrics.http_request(scope, status, started)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "%s %s %s",
                    scope["method"],
                    scope["path"],
                    status,
                    extra=_fields(request_id, status, started),
                )


def _incoming_id(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if _VALID_ID.match(text) else None
    return None


def _fields(request_id: str, status: int, started: float) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "status": status,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }


MAX_BODY_BYTES = 1024 * 1024


class BodyLimitMiddleware:
    """Refuses request bodies over `max_bytes` with 413, before any handler reads them.

    Checks Content-Length up front and counts chunked bodies as they stream in. A path
    in the app's `state.body_limits` ({path: (max bytes, body of the refusal)}) has a
    limit and a refusal of its own (the gateway's routes take larger bodies and answer
    in their vendor's shape).
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limits = getattr(getattr(scope.get("app"), "state", None), "body_limits", None)
        own = limits.get(scope["path"]) if limits else None
        max_bytes = own[0] if own else self.max_bytes
        refusal = own[1] if own else None
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit() or int(value) > max_bytes:
                    await self._refuse(scope, send, max_bytes, refusal)
                    return
                break
        seen = 0
        refused = False

        async def counted() -> Message:
            # Over the limit: answer 413 now and tell the app the client left, so
            # it stops reading; whatever it answers after that is dropped.
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > max_bytes:
                    refused = True
                    await self._refuse(scope, send, max_bytes, refusal)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        try:
            await self.app(scope, counted, guarded_send)
        except Exception:
            if not refused:
                raise

    async def _refuse(
        self, scope: Scope, send: Send, max_bytes: int, refusal: Any = None
    ) -> None:
        detail = f"request body exceeds {max_bytes} bytes"
        if refusal is not None:
            body, media = refusal(detail), b"application/json"
        else:
            media = b"application/problem+json"
            body = json.dumps(
                {
                    "type": "https://agentplane.dev/problems/payload-too-large",
                    "title": "Payload too large",
                    "status": 413,
                    "detail": detail,
                    "instance": scope["path"],
                }
            ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", media),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
