"""Providers (keys encrypted, write-only), models and prices with history."""

from __future__ import annotations

import uuid
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentplane import clock, crypto, outbound
from agentplane.config import Settings
from agentplane.db.errors import translate_errors
from agentplane.db.pool import Connection
from agentplane.errors import Conflict, NotFound, ValidationFailed
from agentplane.llm import store
from agentplane.llm.adapters import AdapterConfig
from agentplane.llm.context import Resolved
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
from agentplane.tenancy import store as tenancy_store

DEFAULT_BASE_URLS = {
    "openai_compatible": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}


class ProviderOptions(BaseModel):
    """The known keys of a provider's config; anything else is a typo, refused."""

    model_config = ConfigDict(extra="forbid")

    timeout: float = Field(default=60.0, gt=0, le=600)
    max_retries: int = Field(default=2, ge=0, le=10)
    backoff: float = Field(default=0.5, ge=0, le=60)
    max_retry_wait_s: float = Field(default=10.0, ge=0, le=120)
    """The longest wait before a retry: a vendor's 429/503 asking for longer (Retry-After)
    is not waited for, the fallback (if any) takes the call at once."""
    fallback: str | None = None
    """Another provider's name, used while this one is unhealthy, and for a call this one
    fails with a timeout, a context-window or content-policy refusal, or a 429/503 that
    asked to retry later (agentplane.llm.fallbacks)."""
    cooldown_s: float = Field(default=30.0, ge=0, le=3600)
    """How long an unhealthy provider with a fallback rests before one call tries it again
    (success makes it healthy; failure rests it again)."""
    headers: dict[str, str] = Field(default_factory=dict)
    latency_ms: float = Field(default=0, ge=0, le=60000)
    """Offline provider only: simulated model latency."""


def options(config: dict[str, Any]) -> ProviderOptions:
    try:
        return ProviderOptions.model_validate(config)
    except ValidationError as exc:
        fields = ", ".join(".".join(map(str, e["loc"])) or "config" for e in exc.errors())
        raise ValidationFailed(f"invalid provider config: {fields}") from None


async def check_reachable(settings: Settings, base_url: str) -> None:
    try:
        await outbound.guard(settings).check_url(base_url)
    except outbound.OutboundRefused as exc:
        raise ValidationFailed.listing(
            [{"field": "base_url", "value": base_url, "message": str(exc)}]
        ) from None


def _context(provider_id: UUID) -> str:
    return f"llm_providers:{provider_id}"


async def create_provider(conn: Connection, settings: Settings, body: ProviderCreate) -> Provider:
    options(body.config)
    base_url = body.base_url
    if body.type == "offline":
        if base_url or body.api_key:
            raise ValidationFailed("an offline provider takes no base_url or api_key")
    else:
        base_url = base_url or DEFAULT_BASE_URLS[body.type]
        await check_reachable(settings, base_url)
    provider_id = uuid.uuid4()
    key = body.api_key.get_secret_value() if body.api_key else None
    ciphertext = crypto.encrypt(settings, key, _context(provider_id)) if key else None
    try:
        with translate_errors():  # here, so that the conflict names the provider
            row = await store.insert_provider(
                conn,
                {
                    "id": provider_id,
                    "name": body.name,
                    "type": body.type,
                    "base_url": base_url,
                    "ciphertext": ciphertext,
                    "model": body.model,
                    "weight": body.weight,
                    "enabled": body.enabled,
                    "config": body.config,
                },
            )
    except Conflict:
        raise Conflict(f"a provider named {body.name} already exists") from None
    return Provider.model_validate(row)


async def list_providers(conn: Connection) -> list[Provider]:
    return [Provider.model_validate(r) for r in await store.list_providers(conn)]


async def get_provider(conn: Connection, ref: str) -> Provider:
    row = await store.get_provider(conn, ref)
    if row is None:
        raise NotFound(f"provider {ref} not found")
    return Provider.model_validate(row)


async def update_provider(
    conn: Connection, settings: Settings, ref: str, body: ProviderUpdate
) -> Provider:
    current = await get_provider(conn, ref)
    if current.builtin:
        raise Conflict(f"provider {current.name} is built in; add a provider of your own instead")
    values = body.model_dump(exclude_unset=True, exclude={"api_key"})
    if "config" in values:
        options(values["config"])
    if current.type == "offline":
        if values.get("base_url") or (body.api_key and body.api_key.get_secret_value()):
            raise ValidationFailed("an offline provider takes no base_url or api_key")
    elif "base_url" in values and values["base_url"] is None:
        values["base_url"] = DEFAULT_BASE_URLS[current.type]  # as on creation
    if values.get("base_url"):
        await check_reachable(settings, values["base_url"])
    if body.api_key is not None:
        secret = body.api_key.get_secret_value()
        values["api_key_ciphertext"] = (
            crypto.encrypt(settings, secret, _context(current.id)) if secret else None
        )
    if not values:
        return current
    row = await store.update_provider(conn, current.id, values)
    return Provider.model_validate(row)


async def delete_provider(conn: Connection, ref: str) -> None:
    current = await get_provider(conn, ref)
    if current.builtin or not await store.delete_provider(conn, current.id):
        raise Conflict(f"provider {current.name} is built in and cannot be deleted")


async def check_model(conn: Connection, model: str, field: str = "model") -> None:
    """Refuse a `provider/model` whose provider the tenant does not have (built-in ones
    always exist), so the mistake shows when it is made, not at the first run. A bare
    model name goes to the tenant's default provider."""
    provider, slash, name = model.partition("/")
    if not slash:
        return
    if not provider or not name:
        message = f"{model!r}: write provider/model, or a model name alone"
    elif await store.get_provider(conn, provider) is None:
        names = ", ".join(sorted({p["name"] for p in await store.list_providers(conn)}))
        message = f"no provider {provider!r} in this tenant (providers: {names})"
    else:
        return
    raise ValidationFailed(f"{field}: {message}", errors=[{"field": field, "message": message}])


FETCH: Any = object()
"""resolve(row=FETCH): the caller has not read the row; resolve reads it."""


async def resolve(
    conn: Connection, settings: Settings, ref: str | None, row: Any = FETCH
) -> list[Resolved]:
    """The providers a call goes to, in the order to try them (unlinked: the caller links
    each to the next): named, else the tenant's default (`row` when the caller read it
    already). An unhealthy one with a fallback gives way to it, except for one call per
    cool-down, which tries it again and falls back only if that fails (so it recovers
    once its vendor does). A healthy one with a fallback gives way to it only on the
    errors fallbacks.falls_over names (`fallback_only`)."""
    if row is FETCH:
        row = await (store.get_provider(conn, ref) if ref else store.default_provider(conn))
    if row is None:
        raise NotFound(f"provider {ref} not found" if ref else "no enabled provider")
    opts = options(row["config"])
    route, fallback_only = [row], False
    if opts.fallback and opts.fallback != row["name"]:
        fallback = await store.get_provider(conn, opts.fallback)
        if fallback is not None and fallback["enabled"]:
            if row["health_status"] != "unhealthy":
                route, fallback_only = [row, fallback], True
            else:
                trial = await store.claim_trial(conn, row["id"], opts.cooldown_s)
                route = [row, fallback] if trial and row["enabled"] else [fallback]
    if not route[0]["enabled"]:
        raise Conflict(f"provider {route[0]['name']} is disabled")
    out = [Resolved(r, adapter_config(settings, r)) for r in route]
    out[0].fallback_only = fallback_only and len(out) > 1
    return out


def adapter_config(settings: Settings, row: dict[str, Any]) -> AdapterConfig:
    opts = options(row["config"])
    key = row.get("api_key_ciphertext")
    return AdapterConfig(
        type=row["type"],
        name=row["name"],
        base_url=row["base_url"],
        api_key=crypto.decrypt(settings, bytes(key), _context(row["id"])) if key else None,
        model=row["model"],
        timeout=opts.timeout,
        max_retries=opts.max_retries,
        backoff=opts.backoff,
        max_retry_wait=opts.max_retry_wait_s,
        headers=opts.headers,
        options={"latency_ms": opts.latency_ms},
        guard=outbound.guard(settings),
    )


# -- models and prices ---------------------------------------------------------------------


def _model(row: dict[str, Any]) -> Model:
    return Model.model_validate(row)


async def list_models(conn: Connection, provider: str | None = None) -> list[Model]:
    return [_model(r) for r in await store.list_models(conn, provider)]


async def get_model(conn: Connection, model_id: UUID) -> Model:
    rows = await store.list_models(conn, model_id=model_id)
    if not rows:
        raise NotFound(f"model {model_id} not found")
    return _model(rows[0])


async def update_model(conn: Connection, model_id: UUID, body: ModelUpdate) -> Model:
    model = await store.get_model(conn, model_id)
    if model is None:
        raise NotFound(f"model {model_id} not found")
    if model["builtin"] or not await store.update_model(conn, model_id, body.context_window):
        raise Conflict(
            "built-in models are shared; add the model for your tenant (same provider and "
            "name) and change that: it takes precedence"
        )
    return await get_model(conn, model_id)


async def create_model(conn: Connection, body: ModelCreate) -> Model:
    try:
        with translate_errors():
            row = await store.insert_model(conn, body.provider, body.name, body.context_window)
    except Conflict:
        raise Conflict(f"this tenant has a model {body.provider}/{body.name} already") from None
    model = _model(row)
    if body.price is not None:
        model.prices = [await set_price(conn, model.id, body.price)]
    return model


async def set_price(conn: Connection, model_id: UUID, body: PriceSet) -> Price:
    """A new price from `valid_from` (default now); the open one ends there. History is
    never rewritten: a price may not start before the current one did."""
    model = await store.get_model(conn, model_id)
    if model is None:
        raise NotFound(f"model {model_id} not found")
    if model["builtin"]:
        raise Conflict(
            "built-in prices are shared; add the model for your tenant (same provider and "
            "name) and price that: it takes precedence"
        )
    start = body.valid_from or clock.now()
    if start.tzinfo is None:
        raise ValidationFailed("valid_from needs a time zone")
    current = await store.open_price(conn, model_id)
    if current is not None:
        if current["valid_from"] >= start:
            raise Conflict(
                "a price cannot start before the current one; past costs stay as they were"
            )
        await store.close_open_price(conn, model_id, start)
    row = await store.insert_price(
        conn, model_id, {**body.model_dump(exclude={"valid_from"}), "valid_from": start}
    )
    return Price.model_validate(row)


async def delete_model(conn: Connection, model_id: UUID) -> None:
    model = await store.get_model(conn, model_id)
    if model is None:
        raise NotFound(f"model {model_id} not found")
    if model["builtin"] or not await store.delete_model(conn, model_id):
        raise Conflict("built-in models cannot be deleted")


# -- LLM calls -----------------------------------------------------------------------------


async def list_calls(conn: Connection, filters: dict[str, Any], limit: int) -> list[LLMCall]:
    """Calls newest first, filtered (see store.CALL_FILTERS); `before` pages on."""
    project = filters.pop("project", None)
    if project is not None:
        filters["project_id"] = await tenancy_store.project_id_of(conn, project)
        if filters["project_id"] is None:
            raise NotFound(f"project {project} not found", param="project")
    return [LLMCall.model_validate(r) for r in await store.list_calls(conn, filters, limit)]


async def get_call(conn: Connection, call_id: UUID) -> LLMCall:
    found = await store.get_call(conn, call_id)
    if found is None:
        raise NotFound(f"LLM call {call_id} not found")
    return LLMCall.model_validate(found)
