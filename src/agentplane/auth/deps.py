"""Dependencies every package's router uses: the database, the authenticated principal,
scopes. They live in auth, below every router, so the routers need nothing from the
API's app (agentplane.app) nor from agentplane.api.

Usage::

    from agentplane.auth.deps import DB, Principal, conn_for, requires

    @router.get("/v1/runs/{run_id}")
    async def get_run(
        run_id: UUID,
        principal: Annotated[Principal, Depends(requires("runs:read"))],
        db: DB,
    ): ...

    Writer = conn_for("runs:write")

    @router.post("/v1/runs")
    async def start_run(conn: Writer): ...

- `requires(*scopes, roles=None)` is a dependency returning the `Principal`: 401 problem
  when the request carries no valid credential, 403 when a scope or the role is
  missing, 429 when the key's or the tenant's rate limit is spent. Credentials:
  `Authorization: Bearer <JWT access token>`, `Authorization: Bearer <API key>`
  (keys start with `ap_`) or `X-API-Key: <API key>`. Authentication is cached for the
  request, so several `requires` in one request cost one database round trip.
- `tenant_connection_for(*scopes, roles=None)` is a dependency yielding a transaction
  on `db.tenant_connection(principal.tenant_id)` (RLS scoped to the caller's tenant):
  committed when the route returns, rolled back when it raises. `conn_for(...)` wraps it
  as an `Annotated` type with `scope="function"`, so the commit happens before the
  response is sent: use that.
- `identity(request)` gives the whole `Identity` (email, tenant slug, rate-limit state)
  of an authenticated request, e.g. for `/me`.

The scope names are listed in `agentplane.auth.scopes`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Query, Request

from agentplane.auth import scopes as sc
from agentplane.auth.audit import Origin
from agentplane.auth.authenticate import Credential, authenticate
from agentplane.auth.models import Identity, Principal
from agentplane.auth.secrets import API_KEY_PREFIX, BEARER
from agentplane.db.pool import Connection, Database
from agentplane.errors import Forbidden, Unauthorized

__all__ = [
    "DB",
    "IdPrefix",
    "Identity",
    "Principal",
    "get_db",
    "identity",
    "origin",
    "requires",
    "tenant_connection_for",
]


async def get_db(request: Request) -> Database:
    # async: FastAPI runs plain `def` dependencies in a thread pool, a costly hop here.
    return request.app.state.db


DB = Annotated[Database, Depends(get_db)]

# A listing's `?id_prefix=`: only the rows whose id starts so (what short ids resolve by).
IdPrefix = Annotated[str | None, Query(
    description="only those whose id starts with this (a short id: hex digits, dashes)")]


def _credential(request: Request) -> Credential | None:
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise Unauthorized("use Authorization: Bearer <token or API key>", headers=BEARER)
        kind = "api_key" if value.startswith(API_KEY_PREFIX) else "jwt"
        return Credential(kind, value)
    key = request.headers.get("x-api-key")
    if key:
        return Credential("api_key", key.strip())
    return None


async def authenticated(request: Request) -> Identity:
    """The request's identity, authenticated once per request.

    Only `request` as a parameter: every sub-dependency (the database, a Response for
    headers) costs FastAPI work on every authenticated request. The RateLimit-*
    headers are added by RequestIdMiddleware from the identity kept in the scope.
    """
    state = request.scope.setdefault("state", {})
    cached = state.get("identity")
    if cached is not None:
        return cached
    credential = _credential(request)
    if credential is None:
        raise Unauthorized("authentication required", headers=BEARER)
    found = await authenticate(request.app.state.db, credential)
    state["identity"] = found
    return found


def identity(request: Request) -> Identity:
    found = getattr(request.state, "identity", None)
    if found is None:
        raise Unauthorized("authentication required", headers=BEARER)
    return found


def origin(request: Request) -> Origin:
    """The client's address and user agent, for the audit log."""
    return Origin(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def requires(
    *scopes: str, roles: frozenset[str] | set[str] | None = None
) -> Callable[..., Awaitable[Principal]]:
    """A dependency returning the Principal once it holds every scope (and a role in roles)."""
    unknown = sc.unknown(scopes)
    if unknown:  # a typo in a route's declaration should fail at import, not at request
        raise ValueError(f"unknown scopes: {', '.join(unknown)}")
    wanted = frozenset(scopes)
    allowed_roles = frozenset(roles) if roles is not None else None

    async def dependency(found: Annotated[Identity, Depends(authenticated)]) -> Principal:
        principal = found.principal
        if allowed_roles is not None and principal.role not in allowed_roles:
            raise Forbidden(f"requires the role {' or '.join(sorted(allowed_roles))}")
        missing = wanted - principal.scopes
        if missing:
            raise Forbidden(
                f"missing scope {', '.join(sorted(missing))}", missing_scopes=sorted(missing)
            )
        return principal

    return dependency


def tenant_connection_for(
    *scopes: str, roles: frozenset[str] | set[str] | None = None
) -> Callable[..., AsyncIterator[Connection]]:
    """A dependency yielding a transaction scoped (RLS) to the authorized caller's tenant."""
    check = requires(*scopes, roles=roles)

    # A default value, not an Annotated hint: the hint would name a closure variable,
    # which postponed annotations cannot resolve.
    async def dependency(
        db: DB, principal: Principal = Depends(check)
    ) -> AsyncIterator[Connection]:
        async with db.tenant_connection(principal.tenant_id) as conn:
            yield conn

    return dependency


def conn_for(*scopes: str, roles: frozenset[str] | set[str] | None = None) -> object:
    """`Annotated[Connection, ...]` for a route parameter: the caller's tenant transaction,
    committed before the response is sent."""
    return Annotated[
        Connection, Depends(tenant_connection_for(*scopes, roles=roles), scope="function")
    ]
