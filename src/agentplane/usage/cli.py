"""`agentplane usage`: the tenant's usage report (GET /v1/usage) as a table or CSV."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from agentplane import client
from agentplane.errors import ValidationFailed
from agentplane.money import shown
from agentplane.tenancy.cli import TenantRef
from agentplane.terminal import console
from agentplane.usage import reports

out = console()


def usage(
    by: Annotated[
        str | None, typer.Option(help="model, provider, agent, user, key, project or tool.")
    ] = None,
    since: Annotated[str, typer.Option(help="YYYY-MM-DD or a span back: 30d, 4w, 6m.")] = "30d",
    until: Annotated[str | None, typer.Option(help="Last day (default: today).")] = None,
    period: Annotated[str, typer.Option(help="day, week or month.")] = "month",
    value: Annotated[str | None, typer.Option(help="Only this key of --by.")] = None,
    csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table.")] = False,
    tenant: TenantRef = None,
) -> None:
    """Tokens, cost and tasks per period (and per key of --by), from the daily rollup. A
    cost is `—` when no call of the row had a price, `$x + unknown` when some had none."""
    # Bad options are refused before any database is opened.
    if period not in reports.PERIODS:
        raise ValidationFailed(f"--period must be one of {', '.join(reports.PERIODS)}")
    if by is not None and by not in reports.BYS:
        raise ValidationFailed(f"--by must be one of {', '.join(reports.BYS)}")
    reports.window(since, until)
    params = {"period": period, "by": by, "since": since, "until": until, "value": value}

    async def main(api: client.Api) -> Any:
        if csv:
            r = await api.request("GET", "/v1/usage", params={
                **{k: v for k, v in params.items() if v is not None}, "format": "csv"})
            return r.text
        return reports.UsageReport.model_validate(await api.get("/v1/usage", **params))

    found = client.call(tenant, main)
    if csv:
        typer.echo(found, nl=False)
        return
    table = Table(title=f"usage {found.since} .. {found.until}", title_justify="left")
    for name in ("period", by or "total", "calls", "tokens", "cached", "cost", "tasks ok",
                 "tasks failed", "tools"):
        table.add_column(name, justify="left" if name in ("period", by or "total") else "right")
    for r in found.rows:
        table.add_row(str(r.period_start), r.label or r.key or "-", str(r.calls),
                      str(r.total_tokens), str(r.cached_tokens),
                      shown(r.cost_usd, r.unpriced_calls), str(r.tasks_completed),
                      str(r.tasks_failed), str(r.tool_calls))
    if not found.rows:
        out.print(f"no usage from {found.since} to {found.until}")
        return
    out.print(table)
