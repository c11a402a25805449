"""Providers and models: health, latency and prices for every role with `llm:read`; for
owners and admins (the API's `MANAGERS` on its llm and alias routes), forms that add a
provider, a model with its price, and an alias. Each form is validated by the API's own
body model (`ProviderCreate`: the same base URL check) and saved by the API's service,
in one transaction: a refused form changes nothing and shows each field's problem."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, ValidationError

from agentplane.auth.scopes import MANAGERS
from agentplane.errors import AgentplaneError, NotFound
from agentplane.gateway import aliases
from agentplane.gateway.aliases import AliasIn
from agentplane.llm import service as llm
from agentplane.llm.calls import test_call
from agentplane.llm.models import ModelCreate, ProviderCreate
from agentplane.web import http
from agentplane.web.http import Form, Posted, WebRoute, WebUser
from agentplane.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
Action = Annotated[Posted, Depends(http.posted)]


def manages(user: WebUser) -> bool:
    return user.can("llm:write") and user.role in MANAGERS


async def _page(request: Request, user: WebUser, *, status: int = 200,
                **context: Any) -> HTMLResponse:
    http.need(user, "llm:read")
    async with http.db_of(request).tenant_connection(user.tenant_id) as conn:
        found = await llm.list_providers(conn)
        models = await llm.list_models(conn)
        named = await aliases.list_(conn)
    context.setdefault("errors", {})
    context.setdefault("values", {})
    return await page(request, user, "providers.html", status=status,
                      title="Providers and models", providers=found, models=models,
                      aliases=named, manages=manages(user), **context)


@router.get("/providers")
async def providers(request: Request, user: User) -> HTMLResponse:
    return await _page(request, user)


@router.post("/providers/{ref}/test")
async def test_provider(request: Request, action: Action, ref: str) -> Response:
    """One short call through the normal path (budgets, recording), as the API's test."""
    user = action.user
    http.need(user, "llm:write")
    result = failure = None
    try:
        result = await test_call(http.db_of(request), user.principal, ref[:100],
                                 action.form.text("model")[:200] or None)
    except NotFound:
        raise
    except AgentplaneError as exc:
        failure = exc.detail
    return await _page(request, user, result=result, failure=failure, tested=ref)


def _problems(exc: ValidationError) -> dict[str, str]:
    """A field's first problem, keyed by the form's name for it: a list's own name
    (`deployments`, whichever line is wrong), else the innermost name (`price`'s
    `input_per_mtok` is the form's `input_per_mtok`)."""
    found: dict[str, str] = {}
    for e in exc.errors():
        loc = list(e["loc"])
        index = next((i for i, p in enumerate(loc) if isinstance(p, int)), None)
        names = [p for p in (loc[:index] if index is not None else loc) if isinstance(p, str)]
        found.setdefault(names[-1] if names else "form", e["msg"].removeprefix("Value error, "))
    return found


def _blank_is_none(form: Form, names: tuple[str, ...]) -> dict[str, str | None]:
    return {n: form.text(n)[:2000] or None for n in names}


def _deployments(text: str) -> list[dict[str, Any]]:
    """One deployment a line: a model name, then optionally its weight."""
    found = []
    for line in text.splitlines()[:64]:
        name, _, weight = line.strip().partition(" ")
        if name:
            found.append({"name": name, "weight": weight.strip() or 1.0})
    return found


# What each form builds (the API's body model) and how it is saved (the API's service).
SAVES: dict[str, tuple[type[BaseModel], Callable[..., Awaitable[Any]]]] = {
    "provider": (ProviderCreate, lambda conn, db, body: llm.create_provider(
        conn, db.settings, body)),
    "model": (ModelCreate, lambda conn, db, body: llm.create_model(conn, body)),
    "alias": (AliasIn, lambda conn, db, body: aliases.create(conn, body)),
}


async def _save(request: Request, action: Posted, which: str, values: dict[str, Any],
                body: dict[str, Any], notice: str) -> Response:
    """Validate, then save in one transaction; else the page again with the form's
    values and its problems, nothing saved."""
    user = action.user
    http.need(user, "llm:write", roles=MANAGERS)
    build, save = SAVES[which]
    errors: dict[str, str] = {}
    try:
        parsed = build.model_validate(body)
    except ValidationError as exc:
        errors = _problems(exc)
    else:
        db = http.db_of(request)
        try:
            async with db.tenant_connection(user.tenant_id) as conn:
                await save(conn, db, parsed)
        except AgentplaneError as exc:
            if exc.status >= 500:
                raise
            errors = {"form": exc.detail}
    if errors:
        return await _page(request, user, status=422, errors={which: errors},
                           values={which: values})
    return http.redirect(request, f"/providers?notice={notice}")


@router.post("/providers")
async def add_provider(request: Request, action: Action) -> Response:
    form = action.form
    values = _blank_is_none(form, ("name", "type", "base_url", "model", "weight"))
    body = {k: v for k, v in values.items() if v is not None}
    if form.text("api_key"):
        body["api_key"] = form.text("api_key")[:2000]
    return await _save(request, action, "provider", values, body, "provider-added")


@router.post("/providers/models")
async def add_model(request: Request, action: Action) -> Response:
    prices = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok")
    values = _blank_is_none(action.form, ("provider", "name", "context_window", *prices))
    body: dict[str, Any] = {k: values[k] for k in ("provider", "name", "context_window")}
    if any(values[p] is not None for p in prices):
        body["price"] = {p: values[p] for p in prices if values[p] is not None}
    return await _save(request, action, "model", values, body, "model-added")


@router.post("/providers/aliases")
async def add_alias(request: Request, action: Action) -> Response:
    values = _blank_is_none(action.form, ("name", "strategy", "deployments"))
    body = {"name": values["name"], "strategy": values["strategy"] or "weighted",
            "deployments": _deployments(values["deployments"] or "")}
    return await _save(request, action, "alias", values, body, "alias-added")


@router.post("/providers/aliases/{name}/delete")
async def delete_alias(request: Request, action: Action, name: str) -> Response:
    http.need(action.user, "llm:write", roles=MANAGERS)
    async with http.db_of(request).tenant_connection(action.user.tenant_id) as conn:
        await aliases.delete(conn, name[:128])
    return http.redirect(request, "/providers?notice=alias-deleted")
