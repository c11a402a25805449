"""The consoles the CLI prints through.

Rich markup is off: what the CLI prints comes from data (names, messages, validation
patterns such as '^[a-z0-9][a-z0-9_-]{0,99}$', a model's answer), and square brackets in
it must print as they are. Styles are given as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

from rich.console import Console


def console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False)


def print_rows(rows: list[dict], columns: list[str], as_json: bool) -> None:
    """A listing: a table of `columns`, or with --json every field of every row (ids in
    full either way)."""
    if as_json:
        import typer
        from pydantic_core import to_json

        typer.echo(to_json(rows, indent=2).decode())
        return
    from rich.table import Table

    table = Table(*columns)
    for row in rows:
        table.add_row(*("" if row.get(c) is None else str(row[c]) for c in columns))
    console().print(table)
