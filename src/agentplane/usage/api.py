"""HTTP: the tenant's budget, per-key budgets, and the usage ledger."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query

from agentplane.api.deps import conn_for
from agentplane.errors import NotFound
from agentplane.usage import store
from agentplane.usage.models import ApiKeyBudget, ApiKeyBudgetSet, TenantBudget, UsageRecord

router = APIRouter(tags=["usage"])
Reader = conn_for("llm:read")
Writer = conn_for("llm:write", roles={"owner", "admin"})


@router.get("/v1/usage/budget")
async def tenant_budget(conn: Reader) -> TenantBudget:
    """The tenant's monthly token limit, this month's usage and what calls in flight hold."""
    found = await store.tenant_budget(conn)
    if found is None:
        raise NotFound("tenant not found")
    return TenantBudget.model_validate(found)


@router.put("/v1/api-keys/{key_id}/budget")
async def set_key_budget(key_id: UUID, body: ApiKeyBudgetSet, conn: Writer) -> ApiKeyBudget:
    """Cap the tokens an API key may spend (owners and admins)."""
    return ApiKeyBudget.model_validate(
        await store.set_api_key_budget(conn, key_id, body.token_budget)
    )


@router.get("/v1/api-keys/{key_id}/budget")
async def get_key_budget(key_id: UUID, conn: Reader) -> ApiKeyBudget:
    found = await store.get_api_key_budget(conn, key_id)
    if found is None:
        raise NotFound(f"API key {key_id} has no budget")
    return ApiKeyBudget.model_validate(found)


@router.get("/v1/usage/records")
async def usage_records(
    conn: Reader, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> list[UsageRecord]:
    """The newest usage records (analytics aggregate these)."""
    return [UsageRecord.model_validate(r) for r in await store.list_records(conn, limit)]
