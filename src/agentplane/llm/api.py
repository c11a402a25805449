"""HTTP: providers (key write-only), models and prices, LLM calls."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from agentplane.auth.deps import DB, Principal, conn_for, requires
from agentplane.errors import NotFound
from agentplane.llm import service, store
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM, CallContext
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
)
from agentplane.money import Money

router = APIRouter(tags=["llm"])


ReadConn = conn_for("llm:read")
WriteConn = conn_for("llm:write")


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


class TestResult(BaseModel):
    provider: str
    model: str
    latency_ms: int
    prompt_tokens: int
    completion_tokens: int
    content: str
    call_id: UUID
    cost_usd: Money | None = None
    """None: the model has no price."""


@router.post("/v1/llm/providers/{ref}/test")
async def test_provider(
    ref: str,
    principal: Annotated[Principal, Depends(requires("llm:write"))],
    db: DB,
    model: Annotated[str | None, Query(max_length=200)] = None,
) -> TestResult:
    """One short call through the normal path (budgets, recording), in one attempt: a
    test says at once whether the provider answers."""
    out = await LLM(db, db.settings).complete(
        CallContext(
            tenant_id=principal.tenant_id,
            user_id=principal.user_id,
            api_key_id=principal.api_key_id,
        ),
        ChatRequest(
            messages=[{"role": "user", "content": "Reply with one short sentence."}],
            model=model,
            max_tokens=16,
        ),
        provider=ref,
        attempts=1,
    )
    return TestResult(
        provider=out.provider,
        model=out.result.model,
        latency_ms=out.latency_ms,
        prompt_tokens=out.result.prompt_tokens,
        completion_tokens=out.result.completion_tokens,
        content=out.result.content,
        call_id=out.call_id,
        cost_usd=out.cost_usd,
    )


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
    run_id: UUID | None = None
    task_id: UUID | None = None
    provider: str | None = None
    model: str | None = None
    status: Literal["pending", "running", "completed", "failed"] | None = None
    since: datetime | None = None
    until: datetime | None = None
    before: UUID | None = Field(default=None, description="A call id: the page after it.")
    limit: int = Field(default=50, ge=1, le=500)


@router.get("/v1/llm-calls")
async def list_calls(conn: ReadConn, filters: Annotated[CallFilters, Query()]) -> list[LLMCall]:
    """LLM calls, newest first, filtered; page with `before` = the last id seen."""
    values: dict[str, Any] = filters.model_dump(exclude={"limit"})
    return [LLMCall.model_validate(r) for r in await store.list_calls(conn, values, filters.limit)]


@router.get("/v1/llm-calls/{call_id}")
async def get_call(call_id: UUID, conn: ReadConn) -> LLMCall:
    found = await store.get_call(conn, call_id)
    if found is None:
        raise NotFound(f"LLM call {call_id} not found")
    return LLMCall.model_validate(found)
