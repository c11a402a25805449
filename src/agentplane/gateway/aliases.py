"""Tenants' aliases (virtual models): agentplane's own API, in problem+json like every
other route of it."""

from __future__ import annotations

from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from agentplane.auth.deps import conn_for
from agentplane.errors import Conflict, NotFound
from agentplane.gateway import store

router = APIRouter(tags=["gateway"])


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
    strategy: Literal["weighted", "priority", "latency", "cost"] = "weighted"
    deployments: list[Deployment] = Field(min_length=1, max_length=32)


class Alias(BaseModel):
    id: UUID
    name: str
    strategy: str
    deployments: list[Deployment]
    created_at: Any
    updated_at: Any


AliasReader = conn_for("llm:read")
AliasWriter = conn_for("llm:write")


@router.post("/v1/gateway/aliases", status_code=201)
async def create_alias(body: AliasIn, conn: AliasWriter) -> Alias:
    """A virtual model: calls to its name go to its deployments, tried in turn until one
    answers (weighted: an order drawn by weight; priority: as listed; latency: the
    fastest provider lately first; cost: the cheapest first)."""
    unknown = [d.name for d in body.deployments if not await store.route(conn, d.name)]
    if unknown:
        raise NotFound(f"no model {', '.join(unknown)} in this tenant")
    if await store.get_alias(conn, body.name) is not None:
        raise Conflict(f"an alias named {body.name} exists already")
    row = await store.insert_alias(conn, body.model_dump())
    return Alias.model_validate(row)


@router.get("/v1/gateway/aliases")
async def list_aliases(conn: AliasReader) -> list[Alias]:
    return [Alias.model_validate(r) for r in await store.list_aliases(conn)]


@router.delete("/v1/gateway/aliases/{name}", status_code=204)
async def delete_alias(name: str, conn: AliasWriter) -> Response:
    found = await store.get_alias(conn, name)
    if found is None or not await store.delete_alias(conn, found["id"]):
        raise NotFound(f"alias {name} not found")
    return Response(status_code=204)

