"""Model names to providers: one statement (gateway_route) on the caller's transaction.

A name is an alias of the tenant, `provider/model`, a provider's name, or a model name
an enabled provider serves (see gateway/sql/routing.sql for the order). An alias's
deployments become one chain of attempts: a deployment that fails before it answered
gives way to the next, as an unhealthy provider gives way to its fallback. Nothing is
shared between processes for routing but what each call writes anyway (a provider's
health, from the call's own transaction).

A process keeps what a name resolved to for ROUTE_TTL_S, so a stream of calls to one
model reads its route once every few seconds, not once per call: a change to providers
or aliases reaches the gateway within that time. A route through an unhealthy provider
is read each time (its fallback and cool-down are decided in the database).
"""

from __future__ import annotations

import itertools
import math
import random
import time
from dataclasses import dataclass, replace
from typing import Any
from uuid import UUID

from agentplane.config import Settings
from agentplane.db.pool import Connection
from agentplane.gateway import store
from agentplane.gateway.errors import ModelNotFound
from agentplane.llm import in_flight, service
from agentplane.llm.context import Resolved


@dataclass
class Route:
    name: str
    """The name the client gave."""
    resolved: Resolved
    """The first attempt; `then` the next ones."""
    model: str
    """The model of the first attempt, as named to its provider."""
    context_window: int | None
    alias: str | None
    store_content: bool = True
    """False when the tenant's settings say `"llm_content": "drop"`."""
    cache_ttl_s: float = 0.0
    """How long the tenant's response cache keeps an answer (`"llm_cache_ttl_s"`); 0: off."""


ROUTE_TTL_S = 2.0
CACHE_TTL_MAX_S = 30 * 86400.0
_MAX_CACHED = 4096
# (tenant, name) -> (until, route rows, the attempts of each row: service.resolve's).
_cache: dict[tuple[UUID, str], tuple[float, list[dict[str, Any]], list[list[Resolved]]]] = {}


def cached(tenant_id: UUID, name: str) -> list[dict[str, Any]] | None:
    """The rows `name` resolved to in this process less than ROUTE_TTL_S ago."""
    found = _cache.get((tenant_id, name))
    if found is None or found[0] < time.monotonic():
        return None
    rows = found[1]
    if any(r["health_status"] == "unhealthy" for r in rows):
        return None
    return rows


def _keep(
    tenant_id: UUID, name: str, rows: list[dict[str, Any]], attempts: list[list[Resolved]]
) -> None:
    if len(_cache) >= _MAX_CACHED:
        now = time.monotonic()
        for key in [k for k, (until, _, _) in _cache.items() if until < now] or list(_cache):
            del _cache[key]
    _cache[(tenant_id, name)] = (time.monotonic() + ROUTE_TTL_S, rows, attempts)


async def resolve(
    conn: Connection | None, settings: Settings, name: str, tenant_id: UUID | None = None
) -> Route:
    """The route of `name`: from this process's recent routes when `conn` is None (the
    caller checked `cached`), else read on `conn` (and kept, given `tenant_id`). A
    healthy provider's attempts (it, then its configured fallback) are kept with its
    row: they depend on nothing else."""
    if conn is None:
        assert tenant_id is not None and cached(tenant_id, name) is not None, (
            "resolve(None, ...) needs a cached route")
        _, rows, attempts = _cache[(tenant_id, name)]
    else:
        rows = await store.route(conn, name)
        if not rows:
            raise ModelNotFound(name)
        attempts = [await service.resolve(conn, settings, None, _provider(r)) for r in rows]
        if tenant_id is not None:
            _keep(tenant_id, name, rows, attempts)
    by_id = {id(r): a for r, a in zip(rows, attempts, strict=True)}
    rows = ordered(rows, tenant_id)
    chain: list[Resolved] = []
    for row in rows:
        for attempt in by_id[id(row)]:
            mine = attempt.row["id"] == row["id"]
            # A copy per call: a chain is linked (then) for this call's order.
            chain.append(replace(attempt, then=None, model=row["routed_model"] if mine else None))
    for first, after in itertools.pairwise(chain):
        first.then = after
    head = rows[0]
    return Route(
        name=name,
        resolved=chain[0],
        model=chain[0].model or chain[0].row.get("model") or head["routed_model"],
        context_window=head["context_window"],
        alias=head["alias"],
        store_content=head.get("llm_content") != "drop",
        cache_ttl_s=min(max(head.get("llm_cache_ttl_s") or 0.0, 0.0), CACHE_TTL_MAX_S),
    )


def ordered(rows: list[dict[str, Any]], tenant_id: UUID | None = None) -> list[dict[str, Any]]:
    """The order to try an alias's deployments in: `priority` as listed; `weighted`
    drawn by weight, each call anew (a deployment comes first with a chance in
    proportion to its weight, and so on for the rest); `latency` the provider that
    answered fastest lately first (its last observed latency; never observed: last);
    `cost` the cheapest now first (input and output price of a million tokens; no
    price: last); `least_in_flight` the provider with the fewest calls in flight first
    (this process's now, the others' as they last published them: llm/in_flight.py).
    Ties keep the listed order."""
    strategy = rows[0]["strategy"]
    if strategy == "weighted":
        return sorted(rows, key=lambda r: -math.log(1 - random.random()) / r["route_weight"])
    if strategy == "latency":
        return sorted(rows, key=lambda r: (not r["response_time"], r["response_time"]))
    if strategy == "least_in_flight":
        return sorted(rows, key=lambda r: r["route_in_flight"] + (
            in_flight.here(tenant_id, r["id"]) if tenant_id is not None else 0))
    if strategy == "cost":
        return sorted(rows, key=lambda r: (r["route_price"] is None, r["route_price"] or 0))
    return rows


ROUTE_KEYS = ("routed_model", "alias", "deployment", "route_weight", "strategy",
              "context_window", "llm_content", "llm_cache_ttl_s", "route_price",
              "route_in_flight")


def _provider(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ROUTE_KEYS}
