"""The FastAPI app factory: the HTTP pieces of agentplane.api (problem+json errors,
middleware, health, metrics), the router of every package and the dashboard
(agentplane.web, with /docs and /redoc), in one app.

It sits above every package (it imports them all and none imports it): the server
(`agentplane up`), the command line's in-process client and the tests make their apps
here."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from agentplane import __version__
from agentplane.agents import api as agents_api
from agentplane.api import health, metrics, problems
from agentplane.api.middleware import BodyLimitMiddleware, RequestIdMiddleware
from agentplane.auth import api as auth_api
from agentplane.config import Settings, get_settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database
from agentplane.events import api as events_api
from agentplane.events.stream import close_hub
from agentplane.gateway import api as gateway_api
from agentplane.llm import api as llm_api
from agentplane.messages import api as messages_api
from agentplane.messages.inbox import close_wakeups
from agentplane.ops import maintenance
from agentplane.queue import api as queue_api
from agentplane.sessions import api as sessions_api
from agentplane.tenancy import api as tenancy_api
from agentplane.usage import api as usage_api
from agentplane.web import install as install_dashboard
from agentplane.workflows import api as workflows_api


def create_app(
    settings: Settings | None = None,
    db: Database | None = None,
    endpoints: ep.Endpoints | None = None,
) -> FastAPI:
    """An app serving `db`, or one that opens its own pools (on `endpoints` if given)."""

    conf = settings or (db.settings if db is not None else get_settings())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if db is not None:
            async with metrics.listener(app, conf):
                yield
            return
        own = Database(conf, endpoints or ep.resolve(conf))
        try:
            await own.open()
            await maintenance.at_start(own)
            app.state.db = own
            async with metrics.listener(app, conf):
                yield
        finally:
            await close_hub(own)
            await close_wakeups(own)
            await own.close()
            if endpoints is None and own.endpoints.server is not None:
                own.endpoints.server.release()

    app = FastAPI(
        title="agentplane",
        version=__version__,
        lifespan=lifespan,
        description="A PostgreSQL-native control plane for multi-agent LLM systems.",
        # Served by the dashboard from assets in the package, not from a CDN.
        docs_url=None,
        redoc_url=None,
    )
    # Routes read the app's settings: an app may be given a database opened with others.
    app.state.settings = conf
    if db is not None:
        app.state.db = db
    problems.install(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    gateway_api.install(app)  # first: its routes take the most requests
    metrics.install(app, conf)
    app.include_router(auth_api.router)
    app.include_router(tenancy_api.signup_router)
    app.include_router(tenancy_api.router)
    app.include_router(events_api.router)
    app.include_router(llm_api.router)
    app.include_router(sessions_api.router)
    app.include_router(usage_api.router)
    app.include_router(queue_api.router)
    app.include_router(agents_api.router)
    app.include_router(agents_api.tools_router)
    app.include_router(workflows_api.router)
    messages_api.install(app)  # its sending route ahead of the gateway's /v1/messages
    install_dashboard(app)
    return app
