"""HTTP: tenants' aliases (virtual models), agentplane's own API, in problem+json like
every other route of it; gateway.aliases does the work, for the dashboard too."""

from __future__ import annotations

from fastapi import APIRouter, Response

from agentplane.auth.deps import conn_for
from agentplane.auth.scopes import MANAGERS
from agentplane.gateway import aliases
from agentplane.gateway.aliases import Alias, AliasIn

router = APIRouter(tags=["gateway"])

AliasReader = conn_for("llm:read")
AliasWriter = conn_for("llm:write", roles=MANAGERS)


@router.post("/v1/gateway/aliases", status_code=201)
async def create_alias(body: AliasIn, conn: AliasWriter) -> Alias:
    """A virtual model: calls to its name go to its deployments, tried in turn until one
    answers (weighted: an order drawn by weight; priority: as listed; latency: the
    fastest provider lately first; cost: the cheapest first)."""
    return await aliases.create(conn, body)


@router.get("/v1/gateway/aliases")
async def list_aliases(conn: AliasReader) -> list[Alias]:
    return await aliases.list_(conn)


@router.delete("/v1/gateway/aliases/{name}", status_code=204)
async def delete_alias(name: str, conn: AliasWriter) -> Response:
    await aliases.delete(conn, name)
    return Response(status_code=204)
