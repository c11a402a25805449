"""The gateway on the app: OpenAI's routes (openai_routes), Anthropic's messages
(anthropic_routes) and tenants' aliases (alias_routes), with the gateway's own body limit.

Every call goes through agentplane.llm.calls as the runtime's do: budgets reserved before
and settled after, one llm_calls row with its usage record and rollups. The vendor
routes answer errors in their vendor's shape (gateway.errors); the alias routes,
agentplane's own API, in problem+json like every other route.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI

from agentplane.gateway import alias_routes, anthropic_routes, openai_routes
from agentplane.gateway.errors import InvalidRequest, anthropic_body, openai_body, shape

VENDOR_ROUTERS = (openai_routes.router, anthropic_routes.router)
"""The routes that answer in a vendor's shape, not problem+json."""

MAX_BODY_BYTES = 10 * 1024 * 1024
"""A request's body, images included (base64); larger ones are refused with 413."""

OPENAI_PATHS = ("/v1/chat/completions", "/v1/embeddings", "/v1/responses")
ANTHROPIC_PATHS = ("/v1/messages",)


def _too_large(anthropic: bool) -> Any:
    def body(detail: str) -> bytes:
        s = shape(InvalidRequest(detail))
        s.status, s.code = 413, "request_too_large"
        return orjson.dumps(anthropic_body(s) if anthropic else openai_body(s))

    return body


def install(app: FastAPI) -> None:
    """The gateway's routes on `app`, with their own body limit."""
    app.include_router(openai_routes.router)
    app.include_router(anthropic_routes.router)
    app.include_router(alias_routes.router)
    limits = dict(getattr(app.state, "body_limits", None) or {})
    for path in OPENAI_PATHS:
        limits[path] = (MAX_BODY_BYTES, _too_large(False))
    for path in ANTHROPIC_PATHS:
        limits[path] = (MAX_BODY_BYTES, _too_large(True))
    app.state.body_limits = limits
