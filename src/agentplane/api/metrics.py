"""GET /metrics, unauthenticated (Prometheus scrapes without credentials): on the API's
port, or, with AGENTPLANE_METRICS_PORT, on a listener of its own beside it (so it can
be firewalled apart from the API)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentplane import metrics
from agentplane.api.sockets import bind
from agentplane.config import Settings


async def scrape(request: Request) -> Response:
    # The separate listener's app stands for the API's: its database and worker.
    state = getattr(request.app.state, "api", request.app).state
    db = state.db
    pools = {"app": db.app_pool, "autocommit": db.autocommit_pool, "owner": db.owner_pool}
    worker = getattr(state, "worker", None)
    if worker is not None:
        pools["worker"] = worker.pool
    return Response(await metrics.render(db, pools), media_type=metrics.CONTENT_TYPE)


def install(app: Any, settings: Settings) -> None:
    """On the API's own port, when metrics are on and have no port of their own."""
    if settings.metrics and settings.metrics_port is None:
        app.add_api_route("/metrics", scrape, methods=["GET"], include_in_schema=False)


class _Quiet(uvicorn.Server):
    """The API's server owns the process's signals; this one is stopped by the lifespan."""

    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[override]
        yield


def bind_port(settings: Settings) -> socket.socket | None:
    """The separate listener's socket, when metrics have a port: `agentplane up` binds
    it before starting, so a port in use is a one-line error, not a failed startup."""
    if not settings.metrics or settings.metrics_port is None:
        return None
    return bind(settings.host, settings.metrics_port, "AGENTPLANE_METRICS_PORT")


@contextlib.asynccontextmanager
async def listener(app: Any, settings: Settings) -> AsyncIterator[None]:
    """For the app's lifespan: the separate listener, when metrics have a port."""
    sock = getattr(app.state, "metrics_socket", None) or bind_port(settings)
    if sock is None:
        yield
        return
    side = Starlette(routes=[Route("/metrics", scrape, methods=["GET"])])
    side.state.api = app
    server = _Quiet(uvicorn.Config(side, log_config=None, access_log=False, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="agentplane-metrics")
    try:
        yield  # the socket listens already: a scrape waits in its backlog until serve()
    finally:
        server.should_exit = True
        await task
        sock.close()
