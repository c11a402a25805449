"""Usage reports, the period summary, agent metrics and alerts: rules over the rollup.

Every report reads `usage_daily` (a few rows per day and key), so its cost follows the
date range and the number of keys, never the number of usage records.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import date, timedelta
from typing import Any
from uuid import UUID

from agentplane import clock
from agentplane.db.pool import Connection
from agentplane.errors import NotFound, ValidationFailed
from agentplane.money import known_cost
from agentplane.usage import store
from agentplane.usage.models import (
    Alert,
    AlertFiring,
    AlertIn,
    AlertPatch,
    ApiKeyBudget,
    BillingPeriod,
    Overview,
    TenantBudget,
    UsageRecord,
    UsageReport,
    UsageRow,
    UsageSummary,
)

PERIODS = ("day", "week", "month")
BYS = tuple(b for b in store.BY if b)
MAX_DAYS = 3700
RELATIVE = re.compile(r"^(\d{1,4})([dwm])$")


def parse_day(text: str, name: str) -> date:
    """A date (YYYY-MM-DD) or a span back from today: 30d, 4w, 6m."""
    text = text.strip()
    match = RELATIVE.match(text)
    if match:
        return clock.days_back(clock.today(), int(match[1]), match[2])
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(
            f"{name} {text!r} is not a date: use YYYY-MM-DD or a span like 30d, 4w, 6m"
        ) from None


def window(since: str | None, until: str | None) -> tuple[date, date]:
    """The inclusive day range of a report; the last 30 days by default."""
    end = parse_day(until, "until") if until else clock.today()
    start = parse_day(since, "since") if since else end - timedelta(days=29)
    if start > end:
        raise ValidationFailed(f"since ({start}) is after until ({end})")
    if (end - start).days > MAX_DAYS:
        raise ValidationFailed(f"a report spans at most {MAX_DAYS} days")
    return start, end


def _ratio(num: Any, den: Any) -> float | None:
    return None if not den else round(float(num) / float(den), 4)


def row(raw: dict[str, Any]) -> UsageRow:
    tasks = raw["tasks_completed"] + raw["tasks_failed"]
    return UsageRow(
        period_start=raw["period_start"],
        key=raw["key"] or None,
        label=raw.get("label"),
        calls=raw["calls"],
        prompt_tokens=raw["prompt_tokens"],
        completion_tokens=raw["completion_tokens"],
        cached_tokens=raw["cached_tokens"],
        total_tokens=raw["total_tokens"],
        cost_usd=known_cost(raw["cost_usd"], raw["unpriced_calls"]),
        unpriced_calls=raw["unpriced_calls"],
        cost_complete=not raw["unpriced_calls"],
        cache_hit_rate=_ratio(raw["cached_tokens"], raw["prompt_tokens"]),
        avg_llm_latency_ms=_ratio(raw["llm_latency_ms"], raw["calls"]),
        tasks_completed=raw["tasks_completed"],
        tasks_failed=raw["tasks_failed"],
        success_rate=_ratio(raw["tasks_completed"], tasks),
        error_rate=_ratio(raw["tasks_failed"], tasks),
        avg_task_duration_ms=_ratio(raw["task_duration_ms"], tasks),
        tool_calls=raw["tool_calls"],
        tool_failures=raw["tool_failures"],
        runs_completed=raw["runs_completed"],
        runs_failed=raw["runs_failed"],
        runs_cancelled=raw["runs_cancelled"],
    )


async def report(
    conn: Connection,
    *,
    period: str = "day",
    by: str | None = None,
    since: str | None = None,
    until: str | None = None,
    value: str | None = None,
) -> UsageReport:
    if period not in PERIODS:
        raise ValidationFailed(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    if by is not None and by not in BYS:
        raise ValidationFailed(f"by must be one of {', '.join(BYS)}, not {by!r}")
    if value is not None and by is None:
        raise ValidationFailed("value filters the key of `by`: give `by` too")
    start, end = window(since, until)
    rows = await store.report(conn, period=period, by=by, since=start, until=end, value=value)
    return UsageReport(period=period, by=by, since=start, until=end, rows=[row(r) for r in rows])


def to_csv(report: UsageReport) -> str:
    out = io.StringIO()
    fields = list(UsageRow.model_fields)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields)
    for r in report.rows:
        data = r.model_dump()
        writer.writerow(["" if data[f] is None else data[f] for f in fields])
    return out.getvalue()


async def summary(conn: Connection) -> UsageSummary:
    start, end = clock.month_bounds(clock.today())
    totals = await store.period_totals(conn, start, end - timedelta(days=1))
    budget = await store.tenant_budget(conn)
    if budget is None:
        raise NotFound("tenant not found")
    used = totals["total_tokens"] or 0
    limit = budget["token_limit"]
    firings = await store.firings_since(conn, start)
    return UsageSummary(
        period_start=start,
        period_end=end,
        token_limit=limit,
        tokens_used=used,
        tokens_reserved=budget["tokens_reserved"],
        percent_used=round(100.0 * used / limit, 2) if limit else 0.0,
        cost_usd=known_cost(totals["cost_usd"], totals["unpriced_calls"] or 0),
        unpriced_calls=totals["unpriced_calls"] or 0,
        cost_complete=not totals["unpriced_calls"],
        calls=totals["calls"] or 0,
        runs_completed=totals["runs_completed"] or 0,
        runs_failed=totals["runs_failed"] or 0,
        runs_cancelled=totals["runs_cancelled"] or 0,
        tasks_completed=totals["tasks_completed"] or 0,
        tasks_failed=totals["tasks_failed"] or 0,
        alerts_fired=[AlertFiring.model_validate(f) for f in firings],
    )


def _zero(day: date) -> dict[str, Any]:
    return {"period_start": day, "key": None, **dict.fromkeys(ZEROS, 0), "cost_usd": None}


ZEROS = ("calls", "prompt_tokens", "completion_tokens", "cached_tokens", "total_tokens",
         "unpriced_calls", "llm_latency_ms", "tasks_completed", "tasks_failed",
         "task_duration_ms", "tool_calls", "tool_failures", "runs_completed", "runs_failed",
         "runs_cancelled")


async def overview(
    conn: Connection, *, since: str | None = None, until: str | None = None, top: int = 5
) -> Overview:
    """The period's totals, days, top keys, task percentiles and budget: the rollup for
    all but the percentiles (the finished tasks of the period)."""
    start, end = window(since, until)
    if not 1 <= top <= 50:
        raise ValidationFailed("top is between 1 and 50")
    daily = {r["period_start"]: r for r in await store.report(
        conn, period="day", by=None, since=start, until=end, value=None)}
    days = [row(daily.get(start + timedelta(days=i)) or _zero(start + timedelta(days=i)))
            for i in range((end - start).days + 1)]
    totals = await store.period_totals(conn, start, end)
    whole = row({**_zero(start), **{k: v for k, v in totals.items() if v is not None},
                 "cost_usd": totals["cost_usd"]})
    timed = await store.task_durations(conn, start, end)

    async def best(by: str, order: str) -> list[UsageRow]:
        found = await store.top(conn, by=by, since=start, until=end, order=order, limit=top)
        return [row(r) for r in found]

    return Overview(
        since=start,
        until=end,
        totals=whole,
        days=days,
        task_duration_p50_ms=timed["p50"],
        task_duration_p95_ms=timed["p95"],
        tasks_timed=timed["tasks"],
        top_agents=await best("agent", "cost"),
        top_models=await best("model", "cost"),
        top_tools=[r for r in await best("tool", "tool_calls") if r.tool_calls],
        budget=await summary(conn),
    )


async def agent_metrics(
    conn: Connection, slug: str, *, period: str, since: str | None, until: str | None
) -> UsageReport:
    """An agent's series; the route names it by slug like every agent route."""
    agent_id = await store.agent_id(conn, slug)
    if agent_id is None:
        raise NotFound(f"agent {slug!r} not found")
    return await report(
        conn, period=period, by="agent", since=since, until=until, value=str(agent_id)
    )


# -- alerts -----------------------------------------------------------------------------


async def create_alert(conn: Connection, body: AlertIn, actor: UUID | None) -> Alert:
    if body.subject_id is not None and not await store.subject_exists(
        conn, body.scope, body.subject_id
    ):
        what = "user" if body.scope == "user" else "API key"
        raise ValidationFailed(f"no {what} {body.subject_id} in this tenant")
    row = await store.insert_alert(conn, {**body.model_dump(), "created_by": actor})
    return Alert.model_validate(row)


async def get_alert(conn: Connection, alert_id: UUID) -> Alert:
    row = await store.get_alert(conn, alert_id)
    if row is None:
        raise NotFound(f"alert {alert_id} not found")
    return Alert.model_validate(row)


async def update_alert(conn: Connection, alert_id: UUID, body: AlertPatch) -> Alert:
    changes = body.model_dump(exclude_none=True)
    if not changes:
        return await get_alert(conn, alert_id)
    current = await get_alert(conn, alert_id)
    if current.unit == "percent" and changes.get("threshold", 0) > 1000:
        raise ValidationFailed("a percent threshold is at most 1000")
    row = await store.update_alert(conn, alert_id, changes)
    if row is None:
        raise NotFound(f"alert {alert_id} not found")
    return Alert.model_validate(row)


async def delete_alert(conn: Connection, alert_id: UUID) -> None:
    if not await store.delete_alert(conn, alert_id):
        raise NotFound(f"alert {alert_id} not found")


# -- budgets, records, periods and alerts as the API reads them ----------------------------


async def tenant_budget(conn: Connection) -> TenantBudget:
    found = await store.tenant_budget(conn)
    if found is None:
        raise NotFound("tenant not found")
    return TenantBudget.model_validate(found)


async def set_key_budget(conn: Connection, key_id: UUID, tokens: int | None) -> ApiKeyBudget:
    found = await store.set_api_key_budget(conn, key_id, tokens)
    if found is None:
        raise NotFound(f"API key {key_id} not found")
    return ApiKeyBudget.model_validate(found)


async def key_budget(conn: Connection, key_id: UUID) -> ApiKeyBudget:
    found = await store.get_api_key_budget(conn, key_id)
    if found is None:
        raise NotFound(f"API key {key_id} has no budget")
    return ApiKeyBudget.model_validate(found)


async def records(conn: Connection, limit: int) -> list[UsageRecord]:
    return [UsageRecord.model_validate(r) for r in await store.list_records(conn, limit)]


async def billing_periods(conn: Connection, limit: int) -> list[BillingPeriod]:
    return [BillingPeriod.model_validate(r) for r in await store.billing_periods(conn, limit)]


async def list_alerts(conn: Connection) -> list[Alert]:
    return [Alert.model_validate(r) for r in await store.list_alerts(conn)]


async def alert_firings(conn: Connection, alert_id: UUID, limit: int) -> list[AlertFiring]:
    await get_alert(conn, alert_id)
    return [AlertFiring.model_validate(r) for r in await store.alert_firings(conn, alert_id, limit)]
