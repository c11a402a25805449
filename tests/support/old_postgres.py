"""A tiny server speaking just enough of the PostgreSQL protocol to claim version 13.

It lets the version check be tested against a real client handshake.
"""

from __future__ import annotations

import socket
import struct
import threading


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def _param(name: str, value: str) -> bytes:
    return _message(b"S", name.encode() + b"\0" + value.encode() + b"\0")


class OldPostgres:
    def __init__(self, version: str = "13.4") -> None:
        self.version = version
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> OldPostgres:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.sock.close()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self._handshake(conn)

    def _handshake(self, conn: socket.socket) -> None:
        try:
            while True:
                length = struct.unpack("!I", _recv(conn, 4))[0]
                body = _recv(conn, length - 4)
                code = struct.unpack("!I", body[:4])[0]
                if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                    conn.sendall(b"N")
                    continue
                break
            conn.sendall(
                _message(b"R", struct.pack("!I", 0))
                + _param("server_version", self.version)
                + _param("server_encoding", "UTF8")
                + _param("client_encoding", "UTF8")
                + _param("DateStyle", "ISO, MDY")
                + _param("integer_datetimes", "on")
                + _param("standard_conforming_strings", "on")
                + _message(b"K", struct.pack("!II", 1234, 5678))
                + _message(b"Z", b"I")
            )
            conn.recv(1024)  # Terminate
        except (OSError, struct.error):
            pass


def _recv(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise OSError("closed")
        data += chunk
    return data
