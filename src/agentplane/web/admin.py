"""Administration: API keys (a new key is shown once; revoking stops it at once),
members and invitations, and the audit log. Owners and admins act, as in the API."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from agentplane import clock
from agentplane.auth import audit as audit_log
from agentplane.auth import keys as api_keys
from agentplane.auth import scopes as sc
from agentplane.auth.models import ApiKeyIn, normalize_email
from agentplane.errors import ValidationFailed
from agentplane.tenancy import members as tenancy
from agentplane.web import http
from agentplane.web.http import Posted, WebRoute, WebUser
from agentplane.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)
User = Annotated[WebUser, Depends(http.signed_in)]
Action = Annotated[Posted, Depends(http.posted)]
AUDIT_PAGE = 50


# --- API keys -----------------------------------------------------------------------------


async def _keys_page(request: Request, user: WebUser, *, status: int = 200,
                     created: Any = None, key: str | None = None,
                     errors: dict[str, str] | None = None,
                     values: dict[str, Any] | None = None) -> HTMLResponse:
    http.need(user, "keys:manage", managers=True)
    db = http.db_of(request)
    everything = request.query_params.get("revoked") == "1"
    keys = await api_keys.list_keys(db, user.tenant_id, everything)
    members = {m["user_id"]: m["email"] for m in await tenancy.list_members(db, user.principal)}
    return await page(request, user, "keys.html", status=status, title="API keys", keys=keys,
                      members=members, created=created, key=key, errors=errors or {},
                      values=values or {"scopes": list(sc.DEFAULT_KEY_SCOPES)},
                      all_scopes=sorted(user.principal.scopes), revoked=everything)


@router.get("/keys")
async def keys(request: Request, user: User) -> HTMLResponse:
    return await _keys_page(request, user)


@router.post("/keys")
async def create_key(request: Request, action: Action) -> Response:
    user = action.user
    http.need(user, "keys:manage", managers=True)
    form = action.form
    values = {"name": form.text("name"), "scopes": form.lists.get("scopes", []),
              "expires_in_days": form.text("expires_in_days")}
    errors: dict[str, str] = {}
    expires = None
    if values["expires_in_days"]:
        days = values["expires_in_days"]
        if not days.isdigit() or not 1 <= int(days) <= 3650:
            errors["expires_in_days"] = "a number of days, 1 to 3650"
        else:
            expires = clock.now() + timedelta(days=int(days))
    body = None
    try:
        body = ApiKeyIn(name=values["name"], scopes=values["scopes"], expires_at=expires)
    except ValidationError as exc:
        for e in exc.errors():
            errors[str(e["loc"][0]) if e["loc"] else "name"] = e["msg"].removeprefix(
                "Value error, ")
    if not values["scopes"]:
        errors["scopes"] = "choose at least one scope"
    if errors or body is None:
        return await _keys_page(request, user, status=422, errors=errors, values=values)
    try:
        row, key = await api_keys.create_key(http.db_of(request), user.tenant_id, body,
                                                 user.principal, http.origin(request))
    except ValidationFailed as exc:
        return await _keys_page(request, user, status=422, errors={"name": exc.detail},
                                values=values)
    return await _keys_page(request, user, status=201, created=row, key=key)


@router.post("/keys/{ref}/revoke")
async def revoke_key(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, "keys:manage", managers=True)
    await api_keys.revoke_key(http.db_of(request), action.user.tenant_id,
                                  http.parse_uuid(ref, "API key"), action.user.principal,
                                  http.origin(request))
    return http.redirect(request, "/keys?notice=key-revoked")


# --- members and invitations --------------------------------------------------------------


async def _members_page(request: Request, user: WebUser, *, status: int = 200,
                        invited: Any = None, token: str | None = None,
                        error: str | None = None, errors: dict[str, str] | None = None,
                        values: dict[str, str] | None = None) -> HTMLResponse:
    db = http.db_of(request)
    members = await tenancy.list_members(db, user.principal)
    invitations = await tenancy.list_invitations(db, user.principal) if user.manages else []
    return await page(request, user, "members.html", status=status, title="Members",
                      members=members, invitations=invitations, invited=invited, token=token,
                      error=error, errors=errors or {}, values=values or {},
                      roles=sc.ROLES)


@router.get("/members")
async def members(request: Request, user: User) -> HTMLResponse:
    return await _members_page(request, user)


@router.post("/members/invite")
async def invite(request: Request, action: Action) -> Response:
    user = action.user
    http.need(user, "members:manage", managers=True)
    values = {"email": action.form.text("email")[:300], "role": action.form.text("role")}
    errors: dict[str, str] = {}
    try:
        email = normalize_email(values["email"][:254])
    except ValueError:
        errors["email"] = "not a valid email address"
    if values["role"] not in ("admin", "developer", "viewer"):
        errors["role"] = "an invitation's role is admin, developer or viewer"
    if errors:
        return await _members_page(request, user, status=422, errors=errors, values=values)
    role = values["role"]
    row, token = await tenancy.invite(http.db_of(request), user.principal, email, role,
                                      http.origin(request))
    return await _members_page(request, user, status=201, invited=row, token=token)


@router.post("/members/invitations/{ref}/cancel")
async def cancel_invitation(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, "members:manage", managers=True)
    await tenancy.cancel_invitation(http.db_of(request), action.user.principal,
                                    http.parse_uuid(ref, "invitation"), http.origin(request))
    return http.redirect(request, "/members?notice=invitation-cancelled")


@router.post("/members/{ref}/role")
async def change_role(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, "members:manage", managers=True)
    role = action.form.text("role")
    if role not in sc.ROLES:
        return await _members_page(request, action.user, status=422,
                                   error=f"a role is one of {', '.join(sc.ROLES)}")
    await tenancy.change_member(http.db_of(request), action.user.principal,
                                http.parse_uuid(ref, "member"), role, None, http.origin(request))
    return http.redirect(request, "/members?notice=member-changed")


@router.post("/members/{ref}/remove")
async def remove_member(request: Request, action: Action, ref: str) -> Response:
    http.need(action.user, "members:manage", managers=True)
    await tenancy.remove_member(http.db_of(request), action.user.principal,
                                http.parse_uuid(ref, "member"), http.origin(request))
    return http.redirect(request, "/members?notice=member-removed")


# --- the audit log ------------------------------------------------------------------------


@router.get("/audit")
async def audit(request: Request, user: User) -> HTMLResponse:
    http.need(user, "audit:read")
    q = request.query_params
    shown = {k: q.get(k, "").strip() for k in ("event_type", "resource_type", "since",
                                                "until")}
    problems: dict[str, str] = {}
    for k, v in shown.items():
        if len(v) > 64:
            problems[k], shown[k] = "at most 64 characters", v[:64]
    filters: dict[str, Any] = {"event_type": shown["event_type"] or None,
                               "resource_type": shown["resource_type"] or None,
                               "user_id": None, "resource_id": None, "since": None,
                               "until": None}
    for field in ("since", "until"):
        if shown[field]:
            try:
                day = datetime.combine(date.fromisoformat(shown[field]), datetime.min.time(), UTC)
                filters[field] = day + timedelta(days=1) if field == "until" else day
            except ValueError:
                problems[field] = "a date, YYYY-MM-DD"
    rows: list[dict[str, Any]] = []
    next_cursor = None
    if not problems:
        try:
            rows, next_cursor = await audit_log.query_audit(
                http.db_of(request), user.principal, limit=AUDIT_PAGE,
                cursor=(q.get("cursor") or None) and q.get("cursor", "")[:200], **filters)
        except ValidationFailed:
            problems["cursor"] = "not a page of this log: start again from the first"
    members = {m["user_id"]: m["email"]
               for m in await tenancy.list_members(http.db_of(request), user.principal)}
    query = urlencode({k: v for k, v in shown.items() if v})
    return await page(request, user, "audit.html", title="Audit log",
                      status=422 if problems else 200, rows=rows, next_cursor=next_cursor,
                      filters=shown, problems=problems, members=members, query=query)
