"""The consoles the CLI prints through.

Rich markup is off: what the CLI prints comes from data (names, messages, validation
patterns such as '^[a-z0-9][a-z0-9_-]{0,99}$', a model's answer), and square brackets in
it must print as they are. Styles are given as `rich.text.Text`, never as markup.
"""

from __future__ import annotations

from rich.console import Console


def console(*, stderr: bool = False) -> Console:
    return Console(stderr=stderr, markup=False)
