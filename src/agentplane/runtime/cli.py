"""`agentplane tools list`: the tools agents may be given, with their JSON Schemas."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

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
    from agentplane.queue.registry import import_modules
    from agentplane.runtime import tools

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
