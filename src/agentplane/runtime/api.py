"""HTTP: the tools agents may be given, built-in and registered (`@agentplane.tool`)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from agentplane.agents import store
from agentplane.auth.deps import conn_for
from agentplane.runtime import tools

router = APIRouter(prefix="/v1", tags=["agents"])
Read = conn_for("agents:read")


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


@router.get("/tools", response_model_by_alias=True)
async def list_tools(conn: Read) -> list[ToolInfo]:
    """Every tool this process knows: the built-ins, then those of the modules it imported
    (AGENTPLANE_WORKER_IMPORTS); an agent lists the ones it may call in `tools`."""
    denied = set(await store.denied_tools(conn))
    return [
        ToolInfo.model_validate({**t.describe(), "allowed": t.name not in denied})
        for t in tools.listed()
    ]
