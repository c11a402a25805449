"""The FastAPI app factory."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from agentplane import __version__
from agentplane.api import health, problems
from agentplane.api.middleware import RequestIdMiddleware
from agentplane.config import Settings, get_settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database


def create_app(
    settings: Settings | None = None,
    db: Database | None = None,
    endpoints: ep.Endpoints | None = None,
) -> FastAPI:
    """An app serving `db`, or one that opens its own pools (on `endpoints` if given)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if db is not None:
            yield
            return
        conf = settings or get_settings()
        own = Database(conf, endpoints or ep.resolve(conf))
        try:
            await own.open()
            app.state.db = own
            yield
        finally:
            await own.close()
            if endpoints is None and own.endpoints.server is not None:
                own.endpoints.server.release()

    app = FastAPI(
        title="agentplane",
        version=__version__,
        lifespan=lifespan,
        description="A PostgreSQL-native control plane for multi-agent LLM systems.",
    )
    if db is not None:
        app.state.db = db
    problems.install(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    return app
