"""`agentplane up`: the embedded database, migrations and the API in one process."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

import uvicorn

from agentplane import logs
from agentplane.api import metrics
from agentplane.api.sockets import bind
from agentplane.app import create_app
from agentplane.config import Settings
from agentplane.db.setup import database

log = logging.getLogger("agentplane.server")


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after shutting down, which would kill the process
    before the embedded server is released; we exit normally instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        signals = (signal.SIGINT, signal.SIGTERM)
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in signals}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def up(settings: Settings, on_ready: callable | None = None) -> None:  # type: ignore[valid-type]
    logs.configure(settings.log_level, settings.log_format)
    sock = bind(settings.host, settings.port)
    metrics_sock = metrics.bind_port(settings)
    with database(settings) as endpoints:
        app = create_app(settings, endpoints=endpoints)
        app.state.metrics_socket = metrics_sock
        from agentplane.queue.worker import embed

        embed(app, endpoints.app)  # the queue's worker runs in this process too
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=30,
        )
        server = _Server(config)
        if on_ready is not None:
            on_ready(endpoints, sock.getsockname())
        server.run(sockets=[sock])
