"""Usage: the reports of /v1/usage (a period, a grouping, a window) as a chart and a
table, and the same report as CSV."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from agentplane.errors import ValidationFailed
from agentplane.usage import reports
from agentplane.web import charts, http
from agentplane.web.http import WebRoute, WebUser
from agentplane.web.templating import duration, money, number, page

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
MEASURES = {
    "total_tokens": ("tokens", number),
    "cost_usd": ("cost", money),
    "calls": ("LLM calls", number),
    "tasks": ("tasks", number),
    "avg_task_duration_ms": ("mean task duration", duration),
}


def _params(request: Request) -> dict[str, str | None]:
    q = request.query_params
    return {
        "period": q.get("period") or "day",
        "by": q.get("by") or None,
        "since": (q.get("since") or "30d")[:40],
        "until": (q.get("until") or None) and q.get("until", "")[:40],
        "value": (q.get("value") or None) and q.get("value", "")[:200],
    }


def _value(row: Any, measure: str) -> Any:
    if measure == "tasks":
        return row.tasks_completed + row.tasks_failed
    return getattr(row, measure)


@router.get("/usage")
async def usage(request: Request, user: User) -> HTMLResponse:
    http.need(user, "usage:read")
    params = _params(request)
    measure = request.query_params.get("measure", "total_tokens")
    if measure not in MEASURES:
        measure = "total_tokens"
    report = error = None
    try:
        async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
            report = await reports.report(conn, **params)
    except ValidationFailed as exc:
        error = exc.detail
    chart = None
    if report is not None:
        totals: dict[str, float] = defaultdict(float)
        if report.period == "day":  # every day of the window, those without usage too
            for n in range((report.until - report.since).days + 1):
                totals[(report.since + timedelta(days=n)).isoformat()] = 0.0
        for r in report.rows:
            value = _value(r, measure)
            totals[r.period_start.isoformat()] += float(value or 0)
        label, shown = MEASURES[measure]
        keys = sorted(totals)
        chart = charts.columns([totals[k] for k in keys], keys, shown=shown,
                               name=f"{label} per {report.period}")
    query = "&".join(f"{k}={v}" for k, v in params.items() if v)
    return await page(request, user, "usage.html", title="Usage",
                      status=422 if error else 200, report=report, error=error, chart=chart,
                      params=params, measure=measure, measures=MEASURES, bys=reports.BYS,
                      periods=reports.PERIODS, query=query)


@router.get("/usage.csv")
async def usage_csv(request: Request, user: User) -> Response:
    """The report as the API's CSV export writes it."""
    http.need(user, "usage:read")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        report = await reports.report(conn, **_params(request))
    name = f"usage-{report.by or 'total'}-{report.period}-{report.since}-{report.until}.csv"
    return Response(reports.to_csv(report), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
