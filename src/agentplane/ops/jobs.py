"""Queue handlers of the scheduled operations (built into every worker).

`ops.maintenance` (daily: partitions ahead, billing periods closed, retention, views) and
`usage.refresh_views` (materialized views, every few minutes). They act on all tenants;
the schedule that fires them belongs to one (see `agentplane ops schedule`)."""

from __future__ import annotations

from typing import Any

from agentplane.config import get_settings
from agentplane.db.pool import Database
from agentplane.ops import service
from agentplane.queue import JobContext, registry

MAINTENANCE = "ops.maintenance"
REFRESH_VIEWS = "usage.refresh_views"
SCHEDULES = (
    ("agentplane-maintenance", "17 3 * * *", MAINTENANCE),
    ("agentplane-usage-views", "*/5 * * * *", REFRESH_VIEWS),
)

_db: Database | None = None


async def _get() -> Database:
    global _db
    if _db is None:
        from agentplane.db import endpoints as ep

        settings = get_settings()
        db = Database(settings.model_copy(update={"pool_min_size": 0}), ep.resolve(settings))
        await db.open()
        _db = db
    return _db


@registry.handler(MAINTENANCE)
async def maintenance(ctx: JobContext) -> dict[str, Any]:
    result = await service.maintenance(await _get())
    return {k: v for k, v in result.items() if k != "partitions"}


@registry.handler(REFRESH_VIEWS)
async def refresh_views(ctx: JobContext) -> dict[str, Any]:
    return {"refreshed": await service.refresh_views(await _get())}
