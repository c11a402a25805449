"""A PostgreSQL of a test module's own, for tests that restart it: stopping it disturbs
no other test."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.migrate import Migrator
from tests.conftest import TEST_SERVER_SETTINGS, free_port, make_settings


@contextlib.contextmanager
def own_server(
    tmp_path_factory: pytest.TempPathFactory, *setup: Callable[[str], None]
) -> Iterator[tuple[EmbeddedServer, Settings, ep.Endpoints]]:
    """A migrated server; each `setup` then gets the owner's conninfo (test tables)."""
    home: Path = tmp_path_factory.mktemp("restart")
    port = free_port()
    server = EmbeddedServer(home, listen="127.0.0.1", port=port, settings=TEST_SERVER_SETTINGS)
    server.acquire()
    conf = make_settings(home, port, "restart")
    endpoints = ep.resolve(conf, start=False)
    ep.bootstrap(conf, endpoints)
    Migrator(endpoints.owner, conf.app_role).upgrade()
    for step in setup:
        step(endpoints.owner)
    try:
        yield server, conf, endpoints
    finally:
        server.stop()
