"""HTTP: agents CRUD, agent instances with their status history, and the tools agents
may be given (built-in and registered with `@agentplane.tool`)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from agentplane.agents import service, store, tools
from agentplane.agents.models import (
    Agent,
    AgentIn,
    AgentPatch,
    AgentStatus,
    Instance,
    InstanceIn,
    InstanceStatusIn,
)
from agentplane.auth.deps import conn_for

router = APIRouter(prefix="/v1/agents", tags=["agents"])
tools_router = APIRouter(prefix="/v1", tags=["agents"])
ReadConn = conn_for("agents:read")
WriteConn = conn_for("agents:write")


@router.post("", status_code=201)
async def create_agent(body: AgentIn, conn: WriteConn) -> Agent:
    return await service.create(conn, body)


@router.get("")
async def list_agents(conn: ReadConn, status: AgentStatus | None = None) -> list[Agent]:
    return await service.list_(conn, status)


@router.get("/{slug}")
async def get_agent(slug: str, conn: ReadConn) -> Agent:
    return await service.get(conn, slug)


@router.patch("/{slug}")
async def update_agent(slug: str, body: AgentPatch, conn: WriteConn) -> Agent:
    return await service.update(conn, slug, body)


@router.delete("/{slug}", status_code=204)
async def delete_agent(slug: str, conn: WriteConn) -> Response:
    await service.delete(conn, slug)
    return Response(status_code=204)


@router.post("/{slug}/instances", status_code=201)
async def start_instance(slug: str, body: InstanceIn, conn: WriteConn) -> Instance:
    return await service.start_instance(conn, slug, body)


@router.get("/{slug}/instances")
async def list_instances(slug: str, conn: ReadConn) -> list[Instance]:
    return await service.list_instances(conn, slug)


@router.post("/{slug}/instances/{instance_id}/status")
async def set_instance_status(
    slug: str, instance_id: UUID, body: InstanceStatusIn, conn: WriteConn
) -> Instance:
    return await service.set_instance_status(conn, slug, instance_id, body)


@router.post("/{slug}/instances/{instance_id}/heartbeat")
async def heartbeat(slug: str, instance_id: UUID, conn: WriteConn) -> Instance:
    return await service.heartbeat(conn, slug, instance_id)


class ToolInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str
    schema_: dict[str, Any] = Field(
        alias="schema", serialization_alias="schema", description="JSON Schema of its arguments"
    )
    source: str = Field(description="built-in, or the module that registered it")
    stateful: bool = Field(description="it acts on the run (performed by the executor)")
    allowed: bool = Field(description="false when the tenant's settings deny it")


@tools_router.get("/tools", response_model_by_alias=True)
async def list_tools(conn: ReadConn) -> list[ToolInfo]:
    """Every tool this process knows: the built-ins, then those of the modules it imported
    (AGENTPLANE_WORKER_IMPORTS); an agent lists the ones it may call in `tools`."""
    denied = set(await store.denied_tools(conn))
    return [
        ToolInfo.model_validate({**t.describe(), "allowed": t.name not in denied})
        for t in tools.listed()
    ]
