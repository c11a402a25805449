"""HTTP routes of the auth package: sign-in, /me, API keys, the audit log (signing up,
POST /v1/auth/register, is tenancy's: agentplane.tenancy.signup)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from agentplane.auth import audit, keys, mfa
from agentplane.auth import login as signin
from agentplane.auth.deps import DB, authenticated, origin, requires
from agentplane.auth.models import (
    ApiKeyCreated,
    ApiKeyIn,
    ApiKeyOut,
    AuditEntry,
    AuditPage,
    Identity,
    LoginIn,
    MeOut,
    MfaDisableIn,
    MfaEnableIn,
    MfaSetupIn,
    MfaSetupOut,
    Principal,
    RefreshIn,
    TokensOut,
)

router = APIRouter(tags=["auth"])
KeysManager = Annotated[Principal, Depends(requires("keys:manage", roles={"owner", "admin"}))]
Me = Annotated[Identity, Depends(authenticated)]


# First in the router: routes are matched in order and this is the hottest one.
@router.get("/me", response_model=MeOut)
async def me(request: Request) -> Response:
    """Who the credential is: user, tenant, role and effective scopes."""
    # Authenticated in the body rather than by a dependency: FastAPI's dependency
    # solving was a third of this route's cost.
    found = await authenticated(request)
    p = found.principal
    # The hottest authenticated route: serialized directly, skipping response validation.
    body = {
        "user_id": str(p.user_id) if p.user_id else None,
        "email": found.email,
        "tenant_id": str(p.tenant_id),
        "tenant_slug": found.tenant_slug,
        "role": p.role,
        "scopes": sorted(p.scopes),
        "api_key_id": str(p.api_key_id) if p.api_key_id else None,
    }
    return JSONResponse(body)  # RateLimit-* headers: added by RequestIdMiddleware


@router.post("/v1/auth/login")
async def login(body: LoginIn, request: Request, db: DB) -> TokensOut:
    """Sign in: a short-lived access token (JWT) and a refresh token."""
    return await signin.login(
        db, body.email, body.password, body.tenant, origin(request), body.totp
    )


@router.post("/v1/auth/refresh")
async def refresh(body: RefreshIn, request: Request, db: DB) -> TokensOut:
    """Exchange a refresh token for new tokens; the presented one is spent."""
    return await signin.refresh(db, body.refresh_token, origin(request))


@router.post("/v1/auth/logout", status_code=204)
async def logout(me: Me, request: Request, db: DB) -> Response:
    """End the current login session (its refresh tokens and access tokens)."""
    await signin.logout(db, me, origin(request))
    return Response(status_code=204)


@router.post("/v1/auth/logout-all")
async def logout_all(me: Me, request: Request, db: DB) -> dict[str, int]:
    """End every login session of the caller, on every device and in every tenant."""
    return {"revoked": await signin.logout_everywhere(db, me.principal, origin(request))}


@router.post("/v1/auth/mfa/setup")
async def mfa_setup(body: MfaSetupIn, me: Me, request: Request, db: DB) -> MfaSetupOut:
    """Start two-factor sign-in: a new TOTP secret, pending until confirmed by a code."""
    return MfaSetupOut(**await mfa.mfa_setup(db, me, body.password, origin(request)))


@router.post("/v1/auth/mfa/enable", status_code=204)
async def mfa_enable(body: MfaEnableIn, me: Me, request: Request, db: DB) -> Response:
    """Turn two-factor sign-in on with a code from the pending secret."""
    await mfa.mfa_enable(db, me, body.code, origin(request))
    return Response(status_code=204)


@router.post("/v1/auth/mfa/disable", status_code=204)
async def mfa_disable(body: MfaDisableIn, me: Me, request: Request, db: DB) -> Response:
    """Turn two-factor sign-in off: the password and a current code."""
    await mfa.mfa_disable(db, me, body.password, body.code, origin(request))
    return Response(status_code=204)


@router.post("/v1/api-keys", status_code=201)
async def create_key(
    body: ApiKeyIn, principal: KeysManager, request: Request, db: DB
) -> ApiKeyCreated:
    """Create an API key. The secret is in this response only."""
    row, key = await keys.create_key(db, principal.tenant_id, body, principal, origin(request))
    return ApiKeyCreated(**row, key=key)


@router.get("/v1/api-keys")
async def list_keys(
    principal: KeysManager, db: DB, include_revoked: bool = False
) -> list[ApiKeyOut]:
    return [
        ApiKeyOut(**r) for r in await keys.list_keys(db, principal.tenant_id, include_revoked)
    ]


@router.get("/v1/api-keys/{key_id}")
async def get_key(key_id: UUID, principal: KeysManager, db: DB) -> ApiKeyOut:
    return ApiKeyOut(**await keys.get_key(db, principal.tenant_id, key_id))


@router.delete("/v1/api-keys/{key_id}")
async def revoke_key(key_id: UUID, principal: KeysManager, request: Request, db: DB) -> ApiKeyOut:
    """Revoke a key: it stops authenticating at once."""
    row = await keys.revoke_key(db, principal.tenant_id, key_id, principal, origin(request))
    return ApiKeyOut(**row)


@router.get("/v1/audit-log")
async def audit_log(
    principal: Annotated[Principal, Depends(requires("audit:read"))],
    db: DB,
    event_type: Annotated[str | None, Query(max_length=64)] = None,
    user_id: UUID | None = None,
    resource_type: Annotated[str | None, Query(max_length=64)] = None,
    resource_id: Annotated[str | None, Query(max_length=200)] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> AuditPage:
    """The tenant's audit log, newest first; pass `next_cursor` back for the next page."""
    rows, next_cursor = await audit.query_audit(
        db,
        principal,
        limit=limit,
        cursor=cursor,
        event_type=event_type,
        user_id=user_id,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since,
        until=until,
    )
    return AuditPage(items=[AuditEntry(**r) for r in rows], next_cursor=next_cursor)
