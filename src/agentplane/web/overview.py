"""The overview: a period's runs, tasks, calls, tokens, cost, error rate and task
durations with a chart each, the top agents, models and tools, the budget and alerts."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse

from agentplane.usage import reports
from agentplane.web import charts, http
from agentplane.web.http import WebRoute, WebUser
from agentplane.web.templating import duration, money, number, page, percent
from agentplane.workflows.runs import list_runs

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
PERIODS = {"1": "today", "7": "7 days", "30": "30 days", "90": "90 days"}


@router.get("/")
async def overview(request: Request, user: User) -> HTMLResponse:
    http.need(user, "usage:read")
    days = request.query_params.get("days", "7")
    if days not in PERIODS:
        days = "7"
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        ov = await reports.overview(conn, since=f"{days}d")
        recent = (await list_runs(conn, limit=8)).items if user.can("runs:read") else []
    labels = [d.period_start.isoformat() for d in ov.days]

    def spark(values: list, shown=number, bad: bool = False, name: str = "") -> str:
        return charts.spark(values, labels, shown=shown, bad=bad, name=name)

    runs = [d.runs_completed + d.runs_failed + d.runs_cancelled for d in ov.days]
    t = ov.totals
    cards = [
        ("Runs", number(t.runs_completed + t.runs_failed + t.runs_cancelled),
         f"{number(t.runs_completed)} completed · {number(t.runs_failed)} failed · "
         f"{number(t.runs_cancelled)} cancelled", spark(runs, name="runs per day")),
        ("Tasks", number(t.tasks_completed + t.tasks_failed),
         f"{number(t.tasks_completed)} completed · {number(t.tasks_failed)} failed",
         spark([d.tasks_completed + d.tasks_failed for d in ov.days], name="tasks per day")),
        ("LLM calls", number(t.calls),
         f"avg latency {duration(t.avg_llm_latency_ms)}",
         spark([d.calls for d in ov.days], name="calls per day")),
        ("Tokens", number(t.total_tokens),
         f"{number(t.prompt_tokens)} in · {number(t.completion_tokens)} out",
         spark([d.total_tokens for d in ov.days], name="tokens per day")),
        ("Cost", money(t.cost_usd, t.unpriced_calls),
         f"{number(t.unpriced_calls)} calls without a price" if t.unpriced_calls else "all priced",
         spark([d.cost_usd for d in ov.days], shown=money, name="cost per day")),
        ("Error rate", percent(t.error_rate), "failed tasks of finished tasks",
         spark([d.error_rate or 0 for d in ov.days], shown=percent, bad=True,
               name="error rate per day")),
        ("Task duration", f"p50 {duration(ov.task_duration_p50_ms)}",
         f"p95 {duration(ov.task_duration_p95_ms)} · {number(ov.tasks_timed)} tasks",
         spark([d.avg_task_duration_ms or 0 for d in ov.days], shown=duration,
               name="mean task duration per day")),
    ]
    budget = ov.budget
    return await page(
        request, user, "overview.html", title="Overview", ov=ov, cards=cards, days=days,
        periods=PERIODS, recent=recent,
        meter=charts.meter(budget.tokens_used + budget.tokens_reserved, budget.token_limit),
    )
