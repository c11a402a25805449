"""Dates for tests that hold on any day: rows are placed relative to the database's
now() in calendar units (a month is a calendar month, never 30 or 31 days)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta

from agentplane import clock


def in_month(at: datetime, months: int, *, day: int = 1, hour: int = 12) -> datetime:
    """Noon (UTC) of `day` in the calendar month `months` away from `at`'s; the day is
    clamped to the month's length."""
    start = clock.month_start(at.astimezone(UTC).date(), months)
    day = min(day, (clock.month_start(start, 1) - timedelta(days=1)).day)
    return datetime.combine(start.replace(day=day), time(hour), UTC)


async def db_now(db) -> datetime:
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT now() AS now")
        return (await cur.fetchone())["now"]


async def clear_of_midnight(db, seconds: float = 15) -> datetime:
    """For a test whose subject is one UTC day (a daily cost, a day's rollup): when the
    next midnight is less than `seconds` away, wait until it has passed. The database's
    now() afterwards."""
    now = await db_now(db)
    midnight = datetime.combine(now.date() + timedelta(days=1), time(0), UTC)
    if (midnight - now).total_seconds() < seconds:
        await asyncio.sleep((midnight - now).total_seconds() + 0.1)
        now = await db_now(db)
    return now
