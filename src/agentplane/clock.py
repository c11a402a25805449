"""The process's one clock, and calendar arithmetic.

Every "what time is it" in the Python code asks `now()` here, so a test can move the
process's time in one place (`monkeypatch.setattr(clock, "now", ...)`); the database's
`now()` is the other source, for what SQL dates itself (every session runs in UTC).

Months are calendar months, as half-open intervals [first day, first day of the next):
never a number of days.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta


def now() -> datetime:
    return datetime.now(UTC)


def today() -> date:
    """The UTC day."""
    return now().date()


def add_months(day: date, months: int) -> date:
    """The same day `months` later (or earlier), clamped to the month's last day:
    31 January + 1 month is 28 (or 29) February."""
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    last = calendar.monthrange(year, month + 1)[1]
    return day.replace(year=year, month=month + 1, day=min(day.day, last))


def month_start(day: date, months: int = 0) -> date:
    """The first day of the month holding `day`, moved by `months`."""
    return add_months(day.replace(day=1), months)


def month_bounds(day: date) -> tuple[date, date]:
    """The calendar month holding `day`: [its first day, the next month's first day)."""
    start = month_start(day)
    return start, month_start(start, 1)


def days_back(day: date, span: int, unit: str) -> date:
    """The first day of the `span` days, weeks or months that end with `day` (inclusive):
    30 days back from 30 June is 1 June, 1 month back from 31 March is 1 March."""
    if unit == "m" and span:
        return add_months(day + timedelta(days=1), -span)
    days = span * (7 if unit == "w" else 1)
    return day - timedelta(days=max(days - 1, 0))
