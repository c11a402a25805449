"""HTTP: the tenant's budget, per-key budgets, and the usage ledger."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response

from agentplane.auth.deps import DB, Principal, conn_for, requires
from agentplane.errors import ValidationFailed
from agentplane.usage import reports
from agentplane.usage.models import (
    Alert,
    AlertFiring,
    AlertIn,
    AlertPatch,
    ApiKeyBudget,
    ApiKeyBudgetSet,
    BillingPeriod,
    Overview,
    TenantBudget,
    UsageRecord,
    UsageReport,
    UsageSummary,
)

router = APIRouter(tags=["usage"])
# Reading usage and budgets takes usage:read; setting a key's budget is an admin's.
ReadConn = conn_for("usage:read")
WriteConn = conn_for("llm:write", roles={"owner", "admin"})
AlertWriter = Annotated[Principal, Depends(requires("llm:write", roles={"owner", "admin"}))]
Period = Annotated[str, Query(description="day, week or month")]
Since = Annotated[str | None, Query(description="YYYY-MM-DD, or a span back: 30d, 4w, 6m")]


@router.get("/v1/usage/budget")
async def tenant_budget(conn: ReadConn) -> TenantBudget:
    """The tenant's monthly token limit, this month's usage and what calls in flight hold."""
    return await reports.tenant_budget(conn)


@router.put("/v1/api-keys/{key_id}/budget")
async def set_key_budget(key_id: UUID, body: ApiKeyBudgetSet, conn: WriteConn) -> ApiKeyBudget:
    """Cap the tokens an API key may spend (owners and admins)."""
    return await reports.set_key_budget(conn, key_id, body.token_budget)


@router.get("/v1/api-keys/{key_id}/budget")
async def get_key_budget(key_id: UUID, conn: ReadConn) -> ApiKeyBudget:
    return await reports.key_budget(conn, key_id)


@router.get("/v1/usage/records")
async def usage_records(
    conn: ReadConn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[UsageRecord]:
    """The newest usage records (analytics aggregate these)."""
    return await reports.records(conn, limit)


@router.get("/v1/usage", response_model=UsageReport)
async def usage_report(
    request: Request,
    conn: ReadConn,
    period: Period = "day",
    by: Annotated[
        str | None,
        Query(description="model, provider, agent, user, key, project or tool; none: totals"),
    ] = None,
    since: Since = None,
    until: Since = None,
    value: Annotated[str | None, Query(description="only this key of `by`")] = None,
    format: Annotated[str | None, Query(description="csv for a CSV export")] = None,
) -> UsageReport | Response:
    """Usage per day, week or month, optionally per key of `by`, from the daily rollup.
    CSV with `format=csv` or `Accept: text/csv`."""
    if format not in (None, "csv", "json"):
        raise ValidationFailed(f"format must be csv or json, not {format!r}")
    found = await reports.report(
        conn, period=period, by=by, since=since, until=until, value=value
    )
    wants_csv = format == "csv" or (
        format is None and "text/csv" in request.headers.get("accept", "")
    )
    if wants_csv:
        name = f"usage-{found.by or 'total'}-{found.period}-{found.since}-{found.until}.csv"
        return Response(
            reports.to_csv(found),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )
    return found


@router.get("/v1/usage/summary")
async def usage_summary(conn: ReadConn) -> UsageSummary:
    """The current billing period (UTC month) against the tenant's limit."""
    return await reports.summary(conn)


@router.get("/v1/usage/overview")
async def usage_overview(
    conn: ReadConn,
    since: Since = None,
    until: Since = None,
    top: Annotated[int, Query(ge=1, le=50)] = 5,
) -> Overview:
    """A period at a glance (default the last 30 days): totals, a row per day, task
    duration p50/p95, the top agents and models by cost and tools by calls, and the
    billing period's budget with the alerts that fired."""
    return await reports.overview(conn, since=since, until=until, top=top)


@router.get("/v1/usage/periods")
async def billing_periods(
    conn: ReadConn, limit: Annotated[int, Query(ge=1, le=120)] = 24
) -> list[BillingPeriod]:
    """Closed billing periods, newest first."""
    return await reports.billing_periods(conn, limit)


@router.get("/v1/usage/agents/{slug}/metrics", response_model=UsageReport)
async def agent_metrics(
    slug: str,
    conn: ReadConn,
    period: Period = "day",
    since: Since = None,
    until: Since = None,
) -> UsageReport:
    """An agent's time series: tasks, success and error rate, latency, tokens, cost."""
    return await reports.agent_metrics(conn, slug, period=period, since=since, until=until)


@router.get("/v1/usage/alerts")
async def list_alerts(conn: ReadConn) -> list[Alert]:
    return await reports.list_alerts(conn)


@router.post("/v1/usage/alerts", status_code=201)
async def create_alert(body: AlertIn, me: AlertWriter, db: DB) -> Alert:
    """A threshold that emits budget.warning (and an audit entry) once per period."""
    async with db.tenant_connection(me.tenant_id) as conn:
        return await reports.create_alert(conn, body, me.user_id)


@router.get("/v1/usage/alerts/{alert_id}")
async def get_alert(alert_id: UUID, conn: ReadConn) -> Alert:
    return await reports.get_alert(conn, alert_id)


@router.get("/v1/usage/alerts/{alert_id}/firings")
async def alert_firings(
    alert_id: UUID, conn: ReadConn, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[AlertFiring]:
    return await reports.alert_firings(conn, alert_id, limit)


@router.patch("/v1/usage/alerts/{alert_id}")
async def update_alert(alert_id: UUID, body: AlertPatch, me: AlertWriter, db: DB) -> Alert:
    async with db.tenant_connection(me.tenant_id) as conn:
        return await reports.update_alert(conn, alert_id, body)


@router.delete("/v1/usage/alerts/{alert_id}", status_code=204)
async def delete_alert(alert_id: UUID, me: AlertWriter, db: DB) -> Response:
    async with db.tenant_connection(me.tenant_id) as conn:
        await reports.delete_alert(conn, alert_id)
    return Response(status_code=204)
