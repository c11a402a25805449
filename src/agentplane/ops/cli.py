"""`agentplane ops retention run|status|set`, `ops partitions`, `ops tasks status|set`,
`ops health`: the operator's commands; they read the database directly, across tenants."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from agentplane.errors import ValidationFailed
from agentplane.ops import service
from agentplane.terminal import console

ops_app = typer.Typer(help="Operations: retention, partitions, system tasks, health.",
                      no_args_is_help=True)
retention_app = typer.Typer(help="Retention policies and their job.", no_args_is_help=True)
ops_app.add_typer(retention_app, name="retention")
tasks_app = typer.Typer(help="The maintenance every worker runs on its own.",
                        no_args_is_help=True)
ops_app.add_typer(tasks_app, name="tasks")
out = console()


def _run(fn: Any) -> Any:
    from agentplane.db.setup import with_database

    return with_database(fn)


def _size(n: Any) -> str:
    n = float(n or 0)
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _table(title: str, rows: list[dict[str, Any]], sizes: tuple[str, ...] = ("bytes",)) -> None:
    if not rows:
        out.print(f"{title}: none")
        return
    table = Table(title=title, title_justify="left")
    for name in rows[0]:
        table.add_column(name)
    for r in rows:
        table.add_row(*(_size(v) if k in sizes else "-" if v is None else str(v)
                        for k, v in r.items()))
    out.print(table)


@retention_app.command("run")
def retention_run() -> None:
    """Apply every enabled policy now: archive or drop expired months, delete expired rows."""
    result = _run(service.run_retention)
    for table, r in result.items():
        what = r.get("partitions", r.get("rows"))
        out.print(f"{table}: {r['action']} after {r['retention_days']} days -> {what}")


@retention_app.command("status")
def retention_status() -> None:
    """Policies, the partitions the next run would retire, and the archive."""
    status = _run(service.retention_status)
    _table("retention policies", [
        {"table": p["table_name"], "days": p["retention_days"], "action": p["action"],
         "enabled": p["enabled"], "due now": ", ".join(p["due"]) or "-",
         "last run": p["last_run_at"]}
        for p in status["policies"]
    ])
    _table("archive", status["archive"])


@retention_app.command("set")
def retention_set(
    table: Annotated[str, typer.Argument(help="usage_records, events or llm_calls.")],
    days: Annotated[int, typer.Option(help="Keep this many days.")],
    action: Annotated[str, typer.Option(help="archive or delete.")] = "archive",
    enabled: Annotated[bool, typer.Option(help="Apply it in runs.")] = True,
) -> None:
    """Create or change a table's retention policy."""
    if table not in service.tables():
        raise ValidationFailed(f"no retention for {table!r}: one of {', '.join(service.tables())}")
    if action not in service.ACTIONS:
        raise ValidationFailed(f"--action must be archive or delete, not {action!r}")
    if days < 1:
        raise ValidationFailed("--days must be at least 1")

    async def main(db: Any) -> None:
        await service.set_policy(db, table, days, action, enabled)

    _run(main)
    out.print(f"{table}: {action} after {days} days{'' if enabled else ' (disabled)'}")


@ops_app.command("partitions")
def partitions(
    ahead: Annotated[int, typer.Option(min=0, max=120, help="Create this many months ahead.")] = 3,
) -> None:
    """Create the coming months' partitions, then list every partition."""

    async def main(db: Any) -> dict[str, Any]:
        await service.ensure_partitions(db, ahead)
        return await service.partitions(db)

    for table, parts in _run(main).items():
        _table(table, [
            {"partition": p["partition"], "from": p["range_from"].date(),
             "to": p["range_to"].date(), "rows (est.)": p["rows_estimate"], "bytes": p["bytes"]}
            for p in parts
        ])


@ops_app.command("health")
def health(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Table sizes, index usage, a bloat estimate, slow statements (pg_stat_statements)."""
    found = _run(service.health)
    if as_json:
        typer.echo(json.dumps(found, default=str, indent=2))
        return
    _table("largest tables", found["tables"])
    _table("indexes (largest; scans 0 = unused)", found["indexes"])
    _table("dead tuples (bloat estimate)", found["bloat"])
    if found["slow_statements"] is None:
        out.print("slow statements: pg_stat_statements is not installed")
    else:
        _table("slowest statements (mean)", found["slow_statements"])


@tasks_app.command("status")
def tasks_status() -> None:
    """The system tasks every worker runs: interval, next run, last result or error."""
    _table("system tasks", [
        {"task": t["name"], "every": t["every"], "next run": t["next_run_at"],
         "last finished": t["last_finished_at"],
         "last": t["last_error"] or json.dumps(t["last_result"], default=str)[:80]}
        for t in _run(service.tasks)
    ])


@tasks_app.command("set")
def tasks_set(
    name: Annotated[str, typer.Argument(help="partitions, billing_periods, retention, "
                                             "refresh_views.")],
    every: Annotated[float, typer.Option(help="Seconds between runs.")],
) -> None:
    """Change how often a system task runs (it next runs no later than one interval on)."""

    async def main(db: Any) -> None:
        await service.set_task(db, name, every)

    _run(main)
    out.print(f"{name}: every {every:g} s")
