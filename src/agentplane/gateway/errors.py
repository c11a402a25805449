"""Errors in the vendors' shapes, with the statuses their SDKs map to the right classes.

OpenAI: `{"error": {"message", "type", "param", "code"}}`; Anthropic: `{"type": "error",
"error": {"type", "message"}}`. Every agentplane error maps to one status and one code
here, so a route only raises; the route class below renders what it raised, including
the authentication and scope errors its dependencies raise, in its vendor's shape.

A budget refusal is a 429 with type and code `insufficient_quota`, as OpenAI answers
a spent quota, so that code written for OpenAI handles it already (RateLimitError, then
the code), with `x-should-retry: false`: the SDKs retry a 429, and waiting does not
refill a budget. A rate limit is a 429 with `retry-after`, which the SDKs honour.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from agentplane.errors import (
    AgentplaneError,
    BadRequest,
    BudgetExceeded,
    Conflict,
    DatabaseUnavailable,
    Forbidden,
    NotFound,
    PartitionMissing,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from agentplane.llm.errors import ProviderError, ProviderTimeout
from agentplane.usage.errors import BudgetUnavailable

log = logging.getLogger("agentplane.gateway")

OVERHEAD = "x-agentplane-overhead-ms"


class InvalidRequest(BadRequest):
    """A request the gateway refuses as it stands (400), naming the parameter."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)


class ModelNotFound(NotFound):
    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )


@dataclass
class Shape:
    status: int
    type: str
    message: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] | None = None


def shape(exc: BaseException) -> Shape:
    """The status, type, code and headers an error is answered with."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        return Shape(400, "invalid_request_error", first.get("msg", "invalid request"),
                     None, _param(first.get("loc", ())))
    if isinstance(exc, HTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "api_error"
        return Shape(exc.status_code, kind, str(exc.detail), None, None, exc.headers)
    if not isinstance(exc, AgentplaneError):
        log.exception("gateway request failed", exc_info=exc)
        return Shape(500, "api_error", "an unexpected error occurred; the request id "
                     "identifies it in the logs", "internal_error")
    extra, message, headers = exc.extra, exc.detail, dict(exc.headers or {})
    if isinstance(exc, BudgetExceeded):
        headers["x-should-retry"] = "false"
        return Shape(429, "insufficient_quota", message, "insufficient_quota", None, headers)
    if isinstance(exc, RateLimited):
        return Shape(429, "rate_limit_error", message, "rate_limit_exceeded", None, headers)
    if isinstance(exc, Unauthorized):
        return Shape(401, "invalid_request_error", message, "invalid_api_key", None, headers)
    if isinstance(exc, Forbidden):
        return Shape(403, "permission_error", message, "insufficient_permissions")
    if isinstance(exc, NotFound):
        return Shape(404, "invalid_request_error", message, extra.get("code", "not_found"),
                     extra.get("param"))
    if isinstance(exc, PayloadTooLarge):
        return Shape(413, "invalid_request_error", message, "request_too_large")
    if isinstance(exc, BadRequest | ValidationFailed):
        param = extra.get("param")
        if param is None and extra.get("errors"):
            param = extra["errors"][0].get("field")
        return Shape(400, "invalid_request_error", message, extra.get("code"), param)
    if isinstance(exc, Conflict):
        # Not a lock timeout (which the SDKs retry on 409): retrying changes nothing.
        return Shape(409, "invalid_request_error", message, "conflict", None,
                     {"x-should-retry": "false"})
    if isinstance(exc, ProviderTimeout):
        return Shape(504, "api_error", message, "upstream_timeout")
    if isinstance(exc, ProviderError):
        upstream = extra.get("upstream_status")
        if upstream in (400, 404, 413, 422):
            # The provider refused the request itself (a context window, an unknown
            # parameter): the client's to fix.
            return Shape(400, "invalid_request_error", message, "upstream_refused")
        if upstream == 429:
            wait = extra.get("retry_after")
            if wait is not None:  # the vendor's wait, passed on: the SDK honours it
                headers["retry-after"] = str(max(1, math.ceil(wait)))
            return Shape(429, "rate_limit_error", message, "upstream_rate_limited", None,
                         headers)
        return Shape(502, "api_error", message, "upstream_error")
    if isinstance(exc, BudgetUnavailable | DatabaseUnavailable | PartitionMissing):
        headers.setdefault("Retry-After", "1")
        return Shape(503, "api_error", message, exc.type.replace("-", "_"), None, headers)
    return Shape(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error",
                 message, exc.type.replace("-", "_"))


def _param(loc: tuple[Any, ...] | list[Any]) -> str | None:
    out = ""
    for part in loc:
        if part == "body":
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or None


def openai_body(s: Shape) -> dict[str, Any]:
    return {"error": {"message": s.message, "type": s.type, "param": s.param, "code": s.code}}


ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    409: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
}


def anthropic_body(s: Shape) -> dict[str, Any]:
    kind = ANTHROPIC_TYPES.get(s.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": s.message}}


def render(exc: BaseException, anthropic: bool = False) -> Response:
    s = shape(exc)
    body = anthropic_body(s) if anthropic else openai_body(s)
    return Response(orjson.dumps(body), s.status, headers=s.headers,
                    media_type="application/json")


def event_error(exc: BaseException) -> dict[str, Any]:
    """The error event a stream ends with when its call fails after it began."""
    return openai_body(shape(exc))


def elapsed_ms(request: Request) -> float:
    """Time spent in agentplane on this request so far: since it arrived, less what its
    call waited on providers (request.state.timing, an agentplane.llm.calls.Timing)."""
    started = getattr(request.state, "gateway_started", None)
    if started is None:
        return 0.0
    timing = getattr(request.state, "timing", None)
    upstream = timing.upstream_s if timing is not None else 0.0
    return max(0.0, (time.perf_counter() - started - upstream) * 1000)


class GatewayRoute(APIRoute):
    """A route of the gateway: every error it (or a dependency) raises answers in the
    vendor's shape, and every answer carries x-agentplane-overhead-ms."""

    anthropic = False

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        anthropic = self.anthropic

        async def route(request: Request) -> Response:
            request.state.gateway_started = time.perf_counter()
            try:
                response = await handler(request)
            except Exception as exc:  # rendered here: the app's handlers speak problem+json
                response = render(exc, anthropic)
            if OVERHEAD not in response.headers:
                response.headers[OVERHEAD] = f"{elapsed_ms(request):.2f}"
            return response

        return route


class AnthropicRoute(GatewayRoute):
    anthropic = True
