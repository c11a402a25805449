"""Every error leaves the API as application/problem+json (RFC 9457)."""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from agentplane.errors import PROBLEM_BASE, AgentplaneError

log = logging.getLogger("agentplane.api")

_HTTP_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-failed",
    429: "rate-limited",
}


class ProblemResponse(JSONResponse):
    media_type = "application/problem+json"


def problem(
    status: int,
    type_: str,
    title: str,
    detail: str,
    request: Request,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> ProblemResponse:
    body = {
        "type": PROBLEM_BASE + type_,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
        **extra,
    }
    return ProblemResponse(body, status_code=status, headers=headers)


async def _agentplane_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, AgentplaneError)
    if exc.status >= 500:
        log.error("request failed: %s", exc.detail, extra={"problem": exc.type})
    return ProblemResponse(
        exc.problem(request.url.path), status_code=exc.status, headers=exc.headers
    )


# Values never echoed back, even to their sender: they end up in logs and screenshots.
_SECRET = re.compile(r"pass|secret|token|key|code|otp", re.IGNORECASE)


def _field_error(err: dict[str, Any]) -> dict[str, Any]:
    # A JSON syntax error's loc is a character offset, not a field.
    field = (
        "body"
        if err.get("type") == "json_invalid"
        else ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
    )
    out = {"field": field, "message": err.get("msg", "invalid")}
    value = err.get("input")
    if (
        err.get("type") != "missing"
        and isinstance(value, str | int | float | bool)
        and not _SECRET.search(field)
    ):
        out["value"] = value[:200] if isinstance(value, str) else value
    return out


async def _validation_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_field_error(err) for err in exc.errors()]
    fields = ", ".join(e["field"] for e in errors)
    return problem(
        422, "validation-failed", "Validation failed", f"invalid {fields}", request, errors=errors
    )


async def _http_error(request: Request, exc: Exception) -> ProblemResponse:
    assert isinstance(exc, StarletteHTTPException)
    type_ = _HTTP_TYPES.get(exc.status_code, "http-error")
    title = type_.replace("-", " ").capitalize()
    return problem(
        exc.status_code,
        type_,
        title,
        str(exc.detail),
        request,
        headers=getattr(exc, "headers", None),
    )


async def _unexpected(request: Request, exc: Exception) -> ProblemResponse:
    log.exception("unhandled error", exc_info=exc)
    return problem(
        500,
        "internal-error",
        "Internal error",
        "an unexpected error occurred; the request id identifies it in the logs",
        request,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(AgentplaneError, _agentplane_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
