"""The README's command reference, made from the command line's own definitions, so that
every command and option `--help` shows is documented (tests/test_readme.py holds the
README to it).

    python -m scripts.cli_reference          # rewrite the README's reference section
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

README = Path(__file__).resolve().parents[1] / "README.md"
BEGIN, END = "<!-- cli-reference: made by scripts/cli_reference.py -->", "<!-- /cli-reference -->"


# Typer brings a click of its own: commands and parameters are told apart by what they
# have, not by their class.
Command = Any


def root() -> Command:
    import typer

    from agentplane.cli import _register, app

    _register([])  # every package's commands
    return typer.main.get_command(app)


def commands(group: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Command]]:
    for name in sorted(group.commands):
        found = group.commands[name]
        if hasattr(found, "commands"):
            yield from commands(found, (*path, name))
        else:
            yield " ".join((*path, name)), found


def _options(command: Command) -> list[str]:
    shown = []
    for param in command.params:
        if param.param_type_name != "option" or getattr(param, "hidden", False):
            continue
        names = [o for o in param.opts + param.secondary_opts if o.startswith("--")]
        if names and names != ["--help"]:
            shown.append("/".join(f"`{n}`" for n in names))
    return shown


def _arguments(command: Command) -> str:
    return " ".join(
        p.name.upper() for p in command.params if p.param_type_name == "argument"
    )


def reference() -> str:
    top = root()
    lines = [BEGIN, "", "| command | options | what it does |", "| --- | --- | --- |"]
    global_opts = ", ".join(_options(top))
    lines.append(f"| `agentplane` | {global_opts} | options of every command, given before it |")
    for path, command in commands(top):
        usage = f"agentplane {path} {_arguments(command)}".strip()
        doc = (command.help or "").strip().split("\n\n")[0].replace("\n", " ")
        doc = doc.replace("|", "\\|")
        lines.append(f"| `{usage}` | {', '.join(_options(command)) or '-'} | {doc} |")
    lines += ["", END]
    return "\n".join(lines)


def section(text: str) -> str | None:
    found = re.search(re.escape(BEGIN) + r".*?" + re.escape(END), text, re.S)
    return found.group(0) if found else None


def main() -> int:
    text = README.read_text()
    old = section(text)
    if old is None:
        print(f"README.md has no {BEGIN} ... {END} section", file=sys.stderr)
        return 2
    README.write_text(text.replace(old, reference()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
