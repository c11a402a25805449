"""Where a call goes when its provider fails it: the next attempt of its route (the
fallback of an unhealthy provider on trial, the gateway's next deployment of an alias,
or a healthy provider's configured fallback, for the errors below). Retries of one
provider (429/5xx, honouring Retry-After up to its max_retry_wait_s) are the adapter's
(adapters/base.py: Adapter.send); they come first."""

from __future__ import annotations

from agentplane.llm.context import Resolved
from agentplane.llm.errors import ProviderError, ProviderTimeout


def falls_over(exc: BaseException) -> bool:
    """Whether a healthy provider's failure goes to its fallback: a timeout, a prompt over
    the model's context window (the fallback is meant to have a larger one), a content-
    policy refusal, or a 429/503 that asked to retry later (after the retries it allowed,
    or at once when it asked for longer than the provider waits). Other errors are the
    caller's (a bad request fails on any provider) or count towards the provider's health,
    which makes it unhealthy and sends every call to the fallback until its cool-down."""
    if isinstance(exc, ProviderTimeout):
        return True
    if not isinstance(exc, ProviderError):
        return False
    extra = exc.extra
    if extra.get("upstream_reason") in ("context_window", "content_policy"):
        return True
    return extra.get("upstream_status") in (429, 503) and "retry_after" in extra


def next_route(exc: BaseException, route: Resolved) -> Resolved | None:
    """The attempt after `route` failed with `exc`, or None: the error is the caller's.
    A cancellation (not an Exception) never falls back: the caller is gone. An error a
    healthy provider's fallback does not take skips it (to an alias's next deployment)."""
    if not isinstance(exc, Exception) or route.then is None:
        return None
    if route.fallback_only and not falls_over(exc):
        return route.then.then
    return route.then
