"""Cron ticks in a zone with daylight saving: each tick fires once across the change,
neither skipped nor fired twice. The instants are fixed (Europe/Paris, 2027), so the
tests hold on any day; `scripts/any-date` also runs them with the clock at the change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from agentplane import clock
from agentplane.queue.schedules import latest_tick, next_tick

PARIS = "Europe/Paris"
SPRING = datetime(2027, 3, 28, 0, 59, 30, tzinfo=UTC)  # 01:59:30 CET; 02:00 becomes 03:00
AUTUMN = datetime(2027, 10, 31, 0, 59, 30, tzinfo=UTC)  # 02:59:30 CEST; 03:00 becomes 02:00


def fired(cron: str, start: datetime, hours: float, poll: float = 20) -> list[datetime]:
    """What a worker polling every `poll` seconds from `start` fires (as fire_due does)."""
    due, ticks, now = next_tick(cron, PARIS, start), [], start
    while now < start + timedelta(hours=hours):
        now += timedelta(seconds=poll)
        if due <= now:
            tick, due = latest_tick(cron, PARIS, due, now)
            ticks.append(tick)
    return ticks


def local(ticks: list[datetime]) -> list[str]:
    return [t.astimezone(ZoneInfo(PARIS)).strftime("%H:%M %Z") for t in ticks]


def test_every_minute_across_spring_forward_fires_every_real_minute_once() -> None:
    ticks = fired("* * * * *", SPRING - timedelta(minutes=5), 1)
    assert len(ticks) == len(set(ticks)) == 60
    assert all(b - a == timedelta(minutes=1) for a, b in pairwise(ticks))
    assert "01:59 CET" in local(ticks) and "03:00 CEST" in local(ticks)


@pytest.mark.parametrize(("cron", "expected"), [
    ("0 * * * *", ["01:00 CET", "03:00 CEST", "04:00 CEST"]),  # 02:00 does not exist
    ("30 2 * * *", ["03:00 CEST"]),  # a tick in the skipped hour fires at the change
    ("0 3 * * *", ["03:00 CEST"]),
])
def test_spring_forward_skips_no_tick_and_repeats_none(cron: str, expected: list[str]) -> None:
    ticks = fired(cron, SPRING - timedelta(hours=1), 3)
    assert local(ticks) == expected and len(set(ticks)) == len(ticks)


@pytest.mark.parametrize(("cron", "expected"), [
    # Hourly: both 02:00 are real hours, an hour apart.
    ("0 * * * *", ["02:00 CEST", "02:00 CET", "03:00 CET", "04:00 CET"]),
    # A fixed time in the repeated hour fires at its first pass only.
    ("30 2 * * *", ["02:30 CEST"]),
    ("*/30 2 * * *", ["02:00 CEST", "02:30 CEST"]),
])
def test_fall_back_fires_a_fixed_time_once(cron: str, expected: list[str]) -> None:
    ticks = fired(cron, AUTUMN - timedelta(hours=1, minutes=30), 4)
    assert local(ticks) == expected


def test_ticks_from_now_across_a_day_are_once_each() -> None:
    """From the clock's own now (at the Paris change under scripts/any-date)."""
    start = clock.now()
    ticks = fired("*/15 * * * *", start, 25, poll=60)
    assert len(ticks) == len(set(ticks)) and 99 <= len(ticks) <= 101
    gaps = {b - a for a, b in pairwise(ticks)}
    assert gaps == {timedelta(minutes=15)}
