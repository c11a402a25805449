"""HTTP: providers (key write-only), models and prices, LLM calls. Every role with
`llm:read` reads; providers, models and prices are managed by owners and admins
(`MANAGERS`, the dashboard's providers page checks the same)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from agentplane.auth.deps import DB, Principal, conn_for, requires
from agentplane.auth.scopes import MANAGERS
from agentplane.llm import service
from agentplane.llm.calls import test_call
from agentplane.llm.models import (
    LLMCall,
    Model,
    ModelCreate,
    ModelUpdate,
    Price,
    PriceSet,
    Provider,
    ProviderCreate,
    ProviderUpdate,
    TestResult,
)

router = APIRouter(tags=["llm"])


ReadConn = conn_for("llm:read")
WriteConn = conn_for("llm:write", roles=MANAGERS)


def settings_of(request: Request):
    return request.app.state.db.settings


@router.get("/v1/llm/providers")
async def list_providers(conn: ReadConn) -> list[Provider]:
    """The tenant's providers and the built-in ones. Keys are never shown."""
    return await service.list_providers(conn)


@router.post("/v1/llm/providers", status_code=201)
async def create_provider(body: ProviderCreate, conn: WriteConn, request: Request) -> Provider:
    """Add a provider; its api_key is encrypted at rest and never returned."""
    return await service.create_provider(conn, settings_of(request), body)


@router.get("/v1/llm/providers/{ref}")
async def get_provider(ref: str, conn: ReadConn) -> Provider:
    return await service.get_provider(conn, ref)


@router.patch("/v1/llm/providers/{ref}")
async def update_provider(
    ref: str, body: ProviderUpdate, conn: WriteConn, request: Request
) -> Provider:
    """Change a provider; an empty api_key removes the key, a null base_url restores the
    type's default."""
    return await service.update_provider(conn, settings_of(request), ref, body)


@router.delete("/v1/llm/providers/{ref}", status_code=204)
async def delete_provider(ref: str, conn: WriteConn) -> Response:
    await service.delete_provider(conn, ref)
    return Response(status_code=204)


@router.post("/v1/llm/providers/{ref}/test")
async def test_provider(
    ref: str,
    principal: Annotated[Principal, Depends(requires("llm:write"))],
    db: DB,
    model: Annotated[str | None, Query(max_length=200)] = None,
) -> TestResult:
    """One short call through the normal path (budgets, recording), in one attempt: a
    test says at once whether the provider answers."""
    return await test_call(db, principal, ref, model)


@router.get("/v1/llm/models")
async def list_models(conn: ReadConn, provider: str | None = None) -> list[Model]:
    """Models with their price history, newest price first; tenant rows beside built-in."""
    return await service.list_models(conn, provider)


@router.post("/v1/llm/models", status_code=201)
async def create_model(body: ModelCreate, conn: WriteConn) -> Model:
    """A model for this tenant (same provider and name as a built-in one overrides it)."""
    return await service.create_model(conn, body)


@router.get("/v1/llm/models/{model_id}")
async def get_model(model_id: UUID, conn: ReadConn) -> Model:
    return await service.get_model(conn, model_id)


@router.patch("/v1/llm/models/{model_id}")
async def update_model(model_id: UUID, body: ModelUpdate, conn: WriteConn) -> Model:
    """A tenant model's context window (built-in ones are shared: add your own)."""
    return await service.update_model(conn, model_id, body)


@router.post("/v1/llm/models/{model_id}/prices", status_code=201)
async def set_price(model_id: UUID, body: PriceSet, conn: WriteConn) -> Price:
    """A new price from valid_from (default now); the current one ends there."""
    return await service.set_price(conn, model_id, body)


@router.delete("/v1/llm/models/{model_id}", status_code=204)
async def delete_model(model_id: UUID, conn: WriteConn) -> Response:
    await service.delete_model(conn, model_id)
    return Response(status_code=204)


class CallFilters(BaseModel):
    session_id: UUID | None = None
    user_id: UUID | None = None
    api_key_id: UUID | None = None
    run_id: UUID | None = None
    task_id: UUID | None = None
    provider: str | None = None
    model: str | None = None
    status: Literal["pending", "running", "completed", "failed", "cancelled"] | None = None
    endpoint: str | None = Field(default=None, max_length=64)
    request_id: str | None = Field(default=None, max_length=128)
    project: str | None = Field(default=None, max_length=100,
                                description="A project's id or slug.")
    tag: str | None = Field(default=None, max_length=64, description="Calls with this tag.")
    cached: bool | None = Field(default=None, description="Answered from the response cache.")
    since: datetime | None = None
    until: datetime | None = None
    before: UUID | None = Field(default=None, description="A call id: the page after it.")
    limit: int = Field(default=50, ge=1, le=500)


@router.get("/v1/llm-calls")
async def list_calls(conn: ReadConn, filters: Annotated[CallFilters, Query()]) -> list[LLMCall]:
    """LLM calls, newest first, filtered; page with `before` = the last id seen."""
    values: dict[str, Any] = filters.model_dump(exclude={"limit"})
    return await service.list_calls(conn, values, filters.limit)


@router.get("/v1/llm-calls/{call_id}")
async def get_call(call_id: UUID, conn: ReadConn) -> LLMCall:
    return await service.get_call(conn, call_id)
