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


async def clear_of(db, unit: str = "day", seconds: float = 15) -> datetime:
    """For a test whose subject is one fixed window (a day's cost, an hour's rate limit):
    when the window's end (UTC) is less than `seconds` away, wait until it has passed, so
    the test runs inside one window. The database's now() afterwards."""
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT now() AS now, extract(epoch FROM date_trunc(%s, now(), 'UTC') "
            "+ make_interval(hours => (%s = 'hour')::int, days => (%s = 'day')::int) "
            "- now()) AS left", [unit, unit, unit])
        row = await cur.fetchone()
    if row["left"] < seconds:
        await asyncio.sleep(float(row["left"]) + 0.1)
        return await db_now(db)
    return row["now"]
