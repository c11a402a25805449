"""Listening sockets, bound before anything is served: a port in use is a one-line
error naming the setting to change, not a failed startup."""

from __future__ import annotations

import errno
import socket

from agentplane.errors import ConfigError


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
