"""`agentplane tools list`: the tools agents may be given, with their JSON Schemas; and
`agentplane demo`: the demo team (agentplane.runtime.demo) at work, offline."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from agentplane.errors import ValidationFailed
from agentplane.terminal import console

tools_app = typer.Typer(help="Tools agents may call: built-in and your own.", no_args_is_help=True)
out = console()


@tools_app.command("list")
def tools_list(
    imports: Annotated[list[str] | None, typer.Option(
        "--import", envvar="AGENTPLANE_WORKER_IMPORTS",
        help="Module registering tools to import (repeatable; env: comma-separated).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, schemas included.")]
    = False,
) -> None:
    """The built-in tools and those the imported modules register."""
    from agentplane.agents import tools
    from agentplane.queue.registry import import_modules

    import_modules([n for item in imports or [] for n in item.split(",")])
    listed = [t.describe() for t in tools.listed()]
    if as_json:
        out.print_json(json.dumps(listed))
        return
    table = Table("name", "source", "arguments", "description")
    for t in listed:
        args = ", ".join(
            n + ("" if n in t["schema"].get("required", []) else "?")
            for n in t["schema"].get("properties", {})
        )
        table.add_row(t["name"], t["source"], args, t["description"])
    out.print(table)


def demo(
    file: Annotated[
        str | None, typer.Option(help="Review this file instead of the sample.")
    ] = None,
) -> None:
    """Seed the Tokyo-IA team and a code-review workflow, run it offline, print the trace."""
    from pathlib import Path

    from rich.rule import Rule
    from rich.text import Text

    from agentplane.client import connected
    from agentplane.db.setup import with_database
    from agentplane.runtime.demo import SAMPLE, TEAM, TENANT, demo_principal, seed
    from agentplane.runtime.local import run_and_show
    from agentplane.workflows.render import render, summary

    if file and not Path(file).is_file():
        raise ValidationFailed(f"--file {file}: no such file to review")
    code = Path(file).read_text(errors="replace") if file else SAMPLE

    async def go(db: Any) -> Any:
        conf = db.settings
        principal, created = await demo_principal(db, TENANT)
        if created:
            out.print(f"created the tenant {TENANT} (owner@{TENANT}.localhost) for the demo",
                      highlight=False)
        await seed(db, principal)
        out.print(Rule("agentplane demo: the Tokyo-IA team reviews some code"))
        for spec in TEAM:
            out.print(Text.assemble(
                f"  {spec['personality_emoji']}  ", (spec["name"], "bold"),
                f"  ({spec['role']}; tools: {', '.join(spec['tools'])})",
            ))
        out.print()
        body = {"workflow": "code-review", "inputs": {"file": code}}
        async with connected(TENANT, conf, db, here=True) as api:  # the demo is local
            return await run_and_show(api, body, out)

    tree = with_database(go)
    out.print(Rule("trace"))
    out.print(render(tree, detail=True))
    out.print(Rule("summary"))
    out.print(summary(tree))
    out.print(
        f"\nSee it again with: agentplane runs show {tree.run.id} --tenant {TENANT}",
        highlight=False,
    )
    if tree.run.status != "completed":
        raise typer.Exit(1)
