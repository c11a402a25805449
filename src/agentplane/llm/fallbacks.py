"""Where a call goes when its provider fails it: the next attempt of its route (the
fallback of an unhealthy provider on trial, or the gateway's next deployment of an
alias). Retries of one provider (429/5xx, Retry-After) are the adapter's
(adapters/base.py: Adapter.send)."""

from __future__ import annotations

from agentplane.llm.context import Resolved


def next_route(exc: BaseException, route: Resolved) -> Resolved | None:
    """The attempt after `route` failed with `exc`, or None: the error is the caller's.
    A cancellation (not an Exception) never falls back: the caller is gone."""
    if not isinstance(exc, Exception):
        return None
    return route.then
