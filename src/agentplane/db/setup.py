"""A database ready for a command or the server: the embedded server started if need
be, the database and the application role made, migrations applied."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

from agentplane.config import Settings, get_settings
from agentplane.db import endpoints as ep
from agentplane.db import revisions
from agentplane.db.pool import Database

T = TypeVar("T")


@contextlib.contextmanager
def database(settings: Settings, *, migrate: bool = True) -> Iterator[ep.Endpoints]:
    """Endpoints of a ready database, migrated to the latest revision unless told not to
    (the `db` commands): a command on a fresh home works as after `agentplane up`. The
    embedded server is released on exit."""
    endpoints = ep.resolve(settings)
    try:
        ep.bootstrap(settings, endpoints)
        if migrate and _behind(endpoints):
            from agentplane.db.migrate import Migrator  # Alembic: loaded to migrate only

            Migrator(endpoints.owner, settings.app_role).upgrade()
        yield endpoints
    finally:
        if endpoints.server is not None:
            endpoints.server.release()


def _behind(endpoints: ep.Endpoints) -> bool:
    """Whether the database is not at the latest migration (ahead is for Migrator to
    refuse)."""
    with ep.connect(endpoints.owner) as conn:
        return revisions.current(conn) != revisions.latest()


def with_database(fn: Callable[[Database], Awaitable[T]]) -> T:
    """Run fn on an open Database (the embedded server is started if need be)."""
    conf = get_settings()

    async def main(endpoints) -> T:
        db = Database(conf.model_copy(update={"pool_min_size": 0}), endpoints)
        await db.open()
        try:
            return await fn(db)
        finally:
            await db.close()

    with database(conf) as endpoints:
        return asyncio.run(main(endpoints))
