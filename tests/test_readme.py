"""The README tells the truth about the command line: its reference lists every command
and option `--help` shows, and every `agentplane` command its examples show names a
command that exists, with options that command takes."""

from __future__ import annotations

import re
import shlex

from scripts import cli_reference

TEXT = cli_reference.README.read_text()


def test_the_reference_lists_every_command_and_option() -> None:
    assert cli_reference.section(TEXT) == cli_reference.reference(), (
        "the README's command reference is out of date: run python -m scripts.cli_reference"
    )


def example_commands() -> list[str]:
    """Every `agentplane ...` command of the README's code: indented blocks and fenced
    shell blocks, continuations joined, pipelines and `&&` split."""
    lines: list[str] = []
    fenced = None
    for line in TEXT.splitlines():
        if line.startswith("```"):
            fenced = None if fenced is not None else line[3:].strip()
            continue
        if (fenced is not None and fenced in ("", "sh", "bash")) or (
            fenced is None and line.startswith("    ")
        ):
            lines.append(line.strip())
    joined = "\n".join(lines).replace("\\\n", " ")
    found = []
    for line in joined.splitlines():
        for part in re.split(r"\s(?:&&|\||;|>|<)\s", line.split(" #")[0]):
            part = part.strip()
            if part.startswith("agentplane "):
                found.append(part)
    return found


def _alternatives(words: list[str]) -> list[list[str]]:
    """`runs cancel|pause|resume RUN` is three commands; `[--version 1]` is optional."""
    out: list[list[str]] = [[]]
    for word in words:
        word = word.strip("[]")
        choices = word.split("|") if "|" in word and not word.startswith("-") else [word]
        out = [[*head, choice] for head in out for choice in choices if choice]
    return out


def test_every_example_command_exists_with_its_options() -> None:
    top = cli_reference.root()
    checked, wrong = 0, []
    for line in example_commands():
        try:
            words = shlex.split(line)[1:]
        except ValueError:
            wrong.append(f"{line}: not a shell command")
            continue
        for args in _alternatives(words):
            command, rest, path = top, list(args), []
            options = {o for p in top.params for o in p.opts + p.secondary_opts}
            while rest and hasattr(command, "commands"):
                if rest[0].startswith("-"):
                    rest = rest[2:] if rest[0] in ("--url", "--api-key") else rest[1:]
                    continue
                if rest[0] not in command.commands:
                    wrong.append(f"{line}: no command {' '.join([*path, rest[0]])!r}")
                    break
                path.append(rest.pop(0))
                command = command.commands[path[-1]]
            else:
                if hasattr(command, "commands"):
                    wrong.append(f"{line}: {' '.join(path)!r} needs a subcommand")
                    continue
                known = options | {o for p in command.params for o in p.opts + p.secondary_opts}
                for word in rest:
                    name = word.split("=")[0]
                    if name.startswith("--") and name not in known | {"--help"}:
                        wrong.append(f"{line}: {' '.join(path)!r} has no option {name}")
                checked += 1
    assert not wrong, "\n".join(wrong)
    assert checked >= 40  # the examples are read at all
