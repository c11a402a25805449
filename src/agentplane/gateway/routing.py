"""Model names to providers: one statement (gateway_route) on the caller's transaction.

A name is an alias of the tenant, `provider/model`, a provider's name, or a model name
an enabled provider serves (see gateway/sql/routing.sql for the order). An alias's
deployments become one chain of attempts: a deployment that fails before it answered
gives way to the next, as an unhealthy provider gives way to its fallback. Nothing is
shared between processes for routing but what each call writes anyway (a provider's
health, from the call's own transaction), so routing costs no round trip of its own.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

from agentplane.config import Settings
from agentplane.db.pool import Connection
from agentplane.gateway import store
from agentplane.gateway.errors import ModelNotFound
from agentplane.llm import service
from agentplane.llm.calls import Resolved


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


async def resolve(conn: Connection, settings: Settings, name: str) -> Route:
    rows = await store.route(conn, name)
    if not rows:
        raise ModelNotFound(name)
    chain: list[Resolved] = []
    for row in rows:
        attempts = await service.resolve(conn, settings, None, _provider(row))
        for provider, config in attempts:
            mine = provider["id"] == row["id"]
            chain.append(Resolved(provider, config, None, row["routed_model"] if mine else None))
    for first, after in itertools.pairwise(chain):
        first.then = after
    head = rows[0]
    return Route(
        name=name,
        resolved=chain[0],
        model=chain[0].model or chain[0].row.get("model") or head["routed_model"],
        context_window=head["context_window"],
        alias=head["alias"],
    )


def _provider(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k not in ("routed_model", "alias", "deployment")}
