"""Aliases: a tenant's virtual model names, each routed to its deployments. One
implementation for the API's `/v1/gateway/aliases` and the dashboard's providers page."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from psycopg import Connection
from pydantic import BaseModel, ConfigDict, Field

from agentplane.errors import Conflict, NotFound
from agentplane.gateway import store


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=256, description="a model name, as the "
                      "gateway resolves it (provider/model, a provider, a model)")
    weight: float = Field(default=1.0, ge=0, le=1_000_000)


class AliasIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$",
                      description="a model name of its own (no slash: provider/model names "
                      "a provider)")
    strategy: Literal["weighted", "priority", "latency", "cost", "least_in_flight"] = "weighted"
    deployments: list[Deployment] = Field(min_length=1, max_length=32)


class Alias(BaseModel):
    id: UUID
    name: str
    strategy: str
    deployments: list[Deployment]
    created_at: Any
    updated_at: Any


async def create(conn: Connection, body: AliasIn) -> Alias:
    """Every deployment must name a model the tenant has; names are unique."""
    unknown = [d.name for d in body.deployments if not await store.route(conn, d.name)]
    if unknown:
        raise NotFound(f"no model {', '.join(unknown)} in this tenant")
    if await store.get_alias(conn, body.name) is not None:
        raise Conflict(f"an alias named {body.name} exists already")
    row = await store.insert_alias(conn, body.model_dump())
    return Alias.model_validate(row)


async def list_(conn: Connection) -> list[Alias]:
    return [Alias.model_validate(r) for r in await store.list_aliases(conn)]


async def delete(conn: Connection, name: str) -> None:
    found = await store.get_alias(conn, name)
    if found is None or not await store.delete_alias(conn, found["id"]):
        raise NotFound(f"alias {name} not found")
