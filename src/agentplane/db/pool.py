"""Async connection pools and the scoped connections built on them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db import jsonb
from agentplane.db.errors import describe_connect_error, translate_errors
from agentplane.errors import DatabaseUnavailable, PartitionMissing

Connection = psycopg.AsyncConnection[dict]
log = logging.getLogger("agentplane.db")
# The tables kept in monthly partitions, each with the SECURITY DEFINER function that
# makes a month of it.
PARTITION_MAKERS = {
    "usage_records": "usage_records_create_partition",
    "events": "events_create_partition",
}


jsonb.use()  # for every connection of the process, the queue worker's included


class Database:
    """The process's pools: one for the application role, a small one for the owner."""

    def __init__(self, settings: Settings, endpoints: ep.Endpoints) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.app_pool = AsyncConnectionPool(
            endpoints.app,
            min_size=settings.pool_min_size,
            max_size=settings.pool_max_size,
            kwargs={"row_factory": dict_row},
            open=False,
            name="app",
        )
        # Application role in autocommit, for single statements that are their own
        # transaction (per-request authentication): no BEGIN/COMMIT round trips.
        self.autocommit_pool = AsyncConnectionPool(
            endpoints.app,
            min_size=min(settings.pool_min_size, 2),
            max_size=settings.pool_max_size,
            kwargs={"row_factory": dict_row, "autocommit": True},
            open=False,
            name="autocommit",
        )
        self.owner_pool = AsyncConnectionPool(
            endpoints.owner,
            min_size=0,
            max_size=4,
            kwargs={"row_factory": dict_row},
            open=False,
            name="owner",
        )

    async def open(self) -> None:
        await self._probe()
        await self.app_pool.open(wait=False)
        await self.autocommit_pool.open(wait=False)
        await self.owner_pool.open(wait=False)

    async def _probe(self) -> None:
        try:
            conn = await psycopg.AsyncConnection.connect(self.endpoints.app)
        except psycopg.OperationalError as exc:
            raise DatabaseUnavailable(
                describe_connect_error(exc, ep.describe_target(self.endpoints.app))
            ) from None
        async with conn:
            ep.check_version(conn.info.server_version, ep.describe_target(self.endpoints.app))

    async def close(self) -> None:
        await self.app_pool.close()
        await self.autocommit_pool.close()
        await self.owner_pool.close()

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Driver errors as agentplane errors; a row that found no partition makes its
        month's partition (the maintenance task makes them ahead: this is the gap after an
        outage) before the error goes on, so the caller's retry succeeds."""
        try:
            with translate_errors():
                yield
        except PartitionMissing as exc:
            log.error("%s", exc.detail, extra={"problem": exc.type})
            await self.create_partition(exc.extra.get("table"), exc.extra.get("at"))
            raise

    async def create_partition(self, table: str | None, at: str | None) -> None:
        """The month holding `at`, else the current one (writers date rows now())."""
        maker = PARTITION_MAKERS.get(table or "")
        if maker is None:
            return
        try:
            async with self.autocommit_pool.connection() as conn:
                await conn.execute(f"SELECT {maker}(coalesce(%s::timestamptz, now()))", [at])
        except (psycopg.Error, PoolTimeout) as exc:
            log.error("could not create the partition of %s for %s: %s", table, at, exc)

    @contextlib.asynccontextmanager
    async def tenant_connection(self, tenant_id: UUID | str) -> AsyncIterator[Connection]:
        """A transaction on the application role that sees one tenant's rows only."""
        async with self._errors(), self.app_pool.connection() as conn, conn.transaction():
            await set_tenant(conn, tenant_id)
            yield conn

    @contextlib.asynccontextmanager
    async def tenant_pipeline(self, tenant_id: UUID | str) -> AsyncIterator[Connection]:
        """A tenant transaction in pipeline mode: statements go out without waiting for
        each other, so the transaction costs one round trip per result awaited (reading
        a cursor), plus one for COMMIT with whatever is still queued."""
        async with (
            self._errors(), self.app_pool.connection() as conn,
            conn.pipeline(),
            conn.transaction(),
        ):
            await set_tenant(conn, tenant_id)
            yield conn

    @contextlib.asynccontextmanager
    async def app_connection(self) -> AsyncIterator[Connection]:
        """A transaction on the application role with no tenant: sees no tenant rows."""
        async with self._errors(), self.app_pool.connection() as conn, conn.transaction():
            yield conn

    @contextlib.asynccontextmanager
    async def autocommit_connection(self) -> AsyncIterator[Connection]:
        """The application role, no tenant, each statement its own transaction."""
        async with self._errors(), self.autocommit_pool.connection() as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def admin_connection(self) -> AsyncIterator[Connection]:
        """A transaction as the owner: not subject to row-level security. Admin paths only."""
        async with self._errors(), self.owner_pool.connection() as conn, conn.transaction():
            yield conn


async def set_tenant(conn: Connection, tenant_id: UUID | str) -> Any:
    """For the rest of the transaction (an implicit one included), row-level security
    sees this tenant's rows only. Returns the cursor: in a pipeline it is sent, not
    waited for."""
    return await conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant_id)])
