"""Operations over all tenants, as the owner: partitions, retention, periods, views,
system tasks, health. Workers run the same work on their own (agentplane.ops.maintenance).

Retention never deletes rows of a partitioned table: a month whose end is older than the
policy's days is detached and moved to the `archive` schema (archive) or dropped
(delete), which takes milliseconds and leaves no dead tuples behind. Only months wholly
past the cut-off go; the rollup (usage_daily) keeps the history of reports and budgets.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from agentplane import clock
from agentplane.db.pool import Database
from agentplane.errors import ValidationFailed
from agentplane.ops import store
from agentplane.ops.maintenance import MONTHS_AHEAD

ACTIONS = ("archive", "delete")


async def ensure_partitions(db: Database, months: int = MONTHS_AHEAD) -> list[str]:
    if not 0 <= months <= 120:
        raise ValidationFailed("months ahead must be between 0 and 120")
    async with db.admin_connection() as conn:
        return await store.ensure_partitions(conn, months)


async def partitions(db: Database) -> dict[str, list[dict[str, Any]]]:
    async with db.admin_connection() as conn:
        return {t: await store.partitions(conn, t) for t in store.PARTITIONED}


def tables() -> list[str]:
    return sorted([*store.PARTITIONED, *store.ROW_TABLES])


async def set_policy(db: Database, table: str, days: int, action: str, enabled: bool) -> None:
    if table not in tables():
        raise ValidationFailed(f"no retention for {table!r}: one of {', '.join(tables())}")
    if action not in ACTIONS:
        raise ValidationFailed(f"action must be archive or delete, not {action!r}")
    if not 1 <= days <= 36500:
        raise ValidationFailed("retention days must be between 1 and 36500")
    async with db.admin_connection() as conn:
        await store.set_policy(conn, table, days, action, enabled)


def _expired(parts: list[dict[str, Any]], days: int, now: datetime) -> list[dict[str, Any]]:
    cutoff = now - timedelta(days=days)
    return [p for p in parts if p["range_to"] is not None and p["range_to"] <= cutoff]


async def retention_status(db: Database) -> dict[str, Any]:
    now = clock.now()
    async with db.admin_connection() as conn:
        policies = await store.policies(conn)
        for p in policies:
            if p["table_name"] in store.PARTITIONED:
                parts = await store.partitions(conn, p["table_name"])
                p["due"] = [x["partition"] for x in _expired(parts, p["retention_days"], now)]
            else:
                p["due"] = []
        archived = await store.archive_tables(conn)
    return {"policies": policies, "archive": archived}


async def run_retention(db: Database) -> dict[str, Any]:
    """Apply every enabled policy now; what each did (one transaction)."""
    async with db.admin_connection() as conn:
        return await store.run_retention(conn)


async def close_billing_periods(db: Database) -> int:
    async with db.admin_connection() as conn:
        return await store.close_billing_periods(conn)


async def refresh_views(db: Database) -> list[str]:
    async with db.admin_connection() as conn:
        return await store.refresh_views(conn)


async def tasks(db: Database) -> list[dict[str, Any]]:
    async with db.admin_connection() as conn:
        return await store.tasks(conn)


async def set_task(db: Database, name: str, seconds: float) -> None:
    if not 1 <= seconds <= 366 * 86400:
        raise ValidationFailed("a task's interval must be between 1 second and 366 days")
    async with db.admin_connection() as conn:
        if not await store.set_task(conn, name, seconds):
            names = ", ".join(t["name"] for t in await store.tasks(conn))
            raise ValidationFailed(f"no system task {name!r}: one of {names}")


async def health(db: Database, limit: int = 15) -> dict[str, Any]:
    async with db.admin_connection() as conn:
        out: dict[str, Any] = {
            "tables": await store.table_sizes(conn, limit),
            "indexes": await store.index_usage(conn, limit),
            "bloat": await store.bloat(conn, limit),
        }
        if await store.has_statements(conn):
            out["slow_statements"] = await store.slow_statements(conn, limit)
        else:
            out["slow_statements"] = None
    return out
