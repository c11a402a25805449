"""Schedules: cron expressions, in a time zone, that enqueue a job type each tick.

One enqueue per tick however many workers run: a worker locks due schedules with
SKIP LOCKED, and `queue_fire_schedule` re-checks `next_run_at` under the row lock
and advances it in the same transaction as the insert (the job also carries the
idempotency key `schedule:<id>:<tick>`). After downtime a schedule fires once,
for its latest missed tick, not once per missed tick. Across a daylight-saving change a
tick fires once: neither skipped nor repeated.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import ValidationError

from agentplane import clock, ids
from agentplane.db.pool import Connection, Database
from agentplane.errors import NotFound, ValidationFailed
from agentplane.queue import store
from agentplane.queue.models import Schedule, ScheduleSpec
from agentplane.queue.service import uuid7, validation_message


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationFailed(f"unknown time zone {name!r} (use an IANA name like "
                               "'Europe/Paris')") from None


def next_tick(cron: str, tz: str, after: datetime) -> datetime:
    """The first tick of `cron` in time zone `tz` strictly after `after` (UTC result)."""
    if not croniter.is_valid(cron) or len(cron.split()) != 5:
        raise ValidationFailed(
            f"invalid cron expression {cron!r}: expected 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/5 * * * *'"
        )
    where = zone(tz)
    fixed_hour = not cron.split()[1].startswith("*")
    ticks = croniter(cron, after.astimezone(where))
    while True:
        tick = ticks.get_next(datetime).astimezone(where)
        # When clocks go back, the hour repeats: a schedule at fixed hours fires at the
        # first pass only (an hourly one fires at both, an hour apart). A tick in the
        # hour skipped when clocks go forward fires at the change.
        if not (fixed_hour and tick.fold):
            return tick.astimezone(UTC)


def latest_tick(cron: str, tz: str, due: datetime, now: datetime) -> tuple[datetime, datetime]:
    """(tick to fire, next tick): the latest tick at or before now, and the one after it."""
    tick = due
    following = next_tick(cron, tz, tick)
    while following <= now:
        tick, following = following, next_tick(cron, tz, following)
    return tick, following


async def create(db: Database, spec: ScheduleSpec | dict, *, tenant_id: UUID | str) -> Schedule:
    try:
        spec = spec if isinstance(spec, ScheduleSpec) else ScheduleSpec.model_validate(spec)
    except ValidationError as exc:
        raise ValidationFailed(validation_message(exc)) from None
    first = next_tick(spec.cron, spec.timezone, clock.now())
    async with db.tenant_connection(tenant_id) as conn:
        row = await store.fetch_one(
            conn, "create_schedule", tenant_id=tenant_id, name=spec.name, cron=spec.cron,
            timezone=spec.timezone, queue=spec.queue, type=spec.type,
            payload=json.dumps(spec.payload), priority=spec.priority.value,
            max_attempts=spec.max_attempts, next_run_at=first,
        )
    assert row is not None
    return Schedule.model_validate(row)


async def list_(
    db: Database, *, tenant_id: UUID | str | None = None, id_prefix: str | None = None
) -> list[Schedule]:
    lo, hi = ids.optional_bounds(id_prefix, "schedule")
    conn_cm = db.tenant_connection(tenant_id) if tenant_id else db.admin_connection()
    async with conn_cm as conn:
        rows = await store.fetch_all(conn, "list_schedules", tenant_id=tenant_id, lo=lo, hi=hi)
    return [Schedule.model_validate(r) for r in rows]


async def delete(db: Database, schedule_id: UUID, *, tenant_id: UUID | str) -> None:
    async with db.tenant_connection(tenant_id) as conn:
        row = await store.fetch_one(conn, "delete_schedule", id=schedule_id, tenant_id=tenant_id)
    if row is None:
        raise NotFound(f"schedule {schedule_id} not found")


async def fire_due(conn: Connection, limit: int = 50) -> int:
    """Enqueue the due ticks of schedules (in the caller's transaction); returns how many."""
    fired = 0
    now = clock.now()
    for row in await store.fetch_all(conn, "due_schedules", limit=limit):
        try:
            tick, following = latest_tick(row["cron"], row["timezone"], row["next_run_at"], now)
        except ValidationFailed:
            continue  # the expression was valid when stored; a missing zone must not stop others
        job = await store.fetch_one(
            conn, "fire_schedule", tenant_id=row["tenant_id"], id=row["id"], tick=tick,
            next=following, job_id=uuid7(),
        )
        fired += bool(job and job["job_id"])
    return fired
