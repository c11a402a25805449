"""Tools of a team's own, registered the documented way: imported by name with
`--import` / AGENTPLANE_WORKER_IMPORTS (tests/runtime/test_tools.py)."""

from __future__ import annotations

import agentplane


@agentplane.tool("shout", description="Upper-case a text and sign it.")
def shout(text: str) -> dict:
    return {"shouted": text.upper(), "by": "custom-tools"}


@agentplane.tool()
async def reverse(text: str, times: int = 1) -> dict:
    """Reverse a text."""
    return {"reversed": text[::-1] if times % 2 else text}
