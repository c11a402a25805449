"""Days and months are UTC days and months whatever the server's TimeZone: every session
of agentplane runs in UTC, so date_trunc('month', now()) in a budget or a billing period
is the UTC month even where the database defaults to another zone."""

from __future__ import annotations

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database


async def test_every_role_sessions_run_in_utc(db: Database, settings: Settings) -> None:
    async with db.admin_connection() as conn:
        await conn.execute(f"ALTER DATABASE {settings.database_name} "
                           "SET timezone = 'Pacific/Kiritimati'")
    fresh = Database(settings, ep.resolve(settings, start=False))
    await fresh.open()
    try:
        for connection in (fresh.admin_connection, fresh.app_connection,
                           fresh.autocommit_connection):
            async with connection() as conn:
                cur = await conn.execute(
                    "SELECT current_setting('TimeZone') AS zone, "
                    "date_trunc('month', now())::date = "
                    "date_trunc('month', now() AT TIME ZONE 'UTC')::date AS utc_month")
                assert await cur.fetchone() == {"zone": "UTC", "utc_month": True}
        async with fresh.owner_pool.connection() as raw:  # RESET keeps it: set at connection
            await raw.execute("RESET timezone")
            cur = await raw.execute("SELECT current_setting('TimeZone') AS zone")
            assert (await cur.fetchone())["zone"] == "UTC"
    finally:
        await fresh.close()
