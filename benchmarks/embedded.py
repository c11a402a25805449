"""The embedded PostgreSQL a benchmark runs on: a temporary home, a free-ish port."""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import psycopg

from agentplane.db.embedded import EmbeddedServer


def start(prefix: str, settings: dict[str, str]) -> tuple[Path, int, EmbeddedServer]:
    """A server started (acquired) on a new home; the caller releases it."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    port = 55000 + (uuid.uuid4().int % 4000)
    server = EmbeddedServer(home, listen="127.0.0.1", port=port, settings=settings)
    server.acquire()
    return home, port, server


def create_db(server: EmbeddedServer, name: str) -> str:
    """A new, empty database on `server`; its conninfo."""
    with psycopg.connect(server.conninfo(), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    return server.conninfo(dbname=name)
