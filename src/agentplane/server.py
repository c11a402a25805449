"""`agentplane up`: the embedded database, migrations and the API in one process."""

from __future__ import annotations

import contextlib
import errno
import logging
import signal
import socket
from collections.abc import Iterator

import uvicorn

from agentplane import logs
from agentplane.api import metrics
from agentplane.api.app import create_app
from agentplane.config import Settings
from agentplane.db.endpoints import database
from agentplane.errors import ConfigError

log = logging.getLogger("agentplane.server")


def bind(host: str, port: int, setting: str = "AGENTPLANE_PORT") -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio turns Nagle's algorithm off (TCP_NODELAY)
    # only on connections whose socket says TCP, and with it on, a response written in
    # two parts waits for the client's delayed ACK (40 ms) on every keep-alive request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {host} is already in use; stop the process using it "
                f"or choose another with {setting}"
            ) from None
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


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
