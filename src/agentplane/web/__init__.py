"""The dashboard: server-rendered pages (Jinja2) over the same services as the API,
htmx for partial updates and its SSE extension on the event streams for live views,
every asset in the package (static/, static/vendor/: no CDN, no build step).

It sits above every package, beside the API's own pieces: the app factory installs it
(`install(app)`), and nothing but the app imports it. Pages read through tenant
connections (row-level security) and call the services the API's routes call; a
page's query that a service lacked was added to that service, for both.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from agentplane.web import (
    admin,
    catalogue,
    docs,
    messages,
    overview,
    providers,
    queue,
    runs,
    signin,
    usage,
    workflows,
)
from agentplane.web.http import add_security_headers
from agentplane.web.templating import error_page

__all__ = ["install"]


class Static(StaticFiles):
    """The package's static files: cached a day (their URLs carry the version)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["x-content-type-options"] = "nosniff"
        if response.status_code == 200:
            response.headers["cache-control"] = "public, max-age=86400"
        return response


def _wants_page(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/v1/", "/static/")) or path in ("/me", "/metrics", "/health", "/ready"):
        return False
    return "text/html" in request.headers.get("accept", "")


def install(app: FastAPI) -> None:
    """Mount the dashboard, /docs and /redoc on the app (after its error handlers)."""
    app.mount("/static", Static(packages=[("agentplane.web", "static")]), name="static")
    app.include_router(docs.router)
    app.include_router(signin.router)
    app.include_router(overview.router)
    app.include_router(runs.router)
    app.include_router(workflows.router)
    app.include_router(catalogue.router)
    app.include_router(providers.router)
    app.include_router(usage.router)
    app.include_router(queue.router)
    app.include_router(messages.router)
    app.include_router(admin.router)
    api_handler = app.exception_handlers[StarletteHTTPException]

    async def http_error(request: Request, exc: Exception) -> Response:
        # A browser that follows a wrong link gets a page; API clients keep problem+json.
        assert isinstance(exc, StarletteHTTPException)
        if _wants_page(request):
            detail = "no such page" if exc.status_code == 404 else str(exc.detail)
            return add_security_headers(
                await error_page(request, exc.status_code, detail, None))
        return await api_handler(request, exc)

    app.add_exception_handler(StarletteHTTPException, http_error)
