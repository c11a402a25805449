"""The one way the CLI's tenant commands reach agentplane: its HTTP API.

On a shared server (`--url`/`AGENTPLANE_URL` with `--api-key`/`AGENTPLANE_API_KEY`) the
requests go over the network, as the key's principal. Without a URL they go to the same
API served in this process over the local database (ASGI, no socket), acting as the
owner of the tenant named by `--tenant`/`AGENTPLANE_TENANT`: each command is written once,
against the API, whichever the target.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx

from agentplane import ids
from agentplane.errors import AgentplaneError, ValidationFailed

T = TypeVar("T")


@dataclass
class Target:
    """Where the commands go: set by the root options, else from the environment."""

    url: str | None = None
    api_key: str | None = None

    def resolved(self) -> Target:
        url = self.url or os.environ.get("AGENTPLANE_URL") or None
        key = self.api_key or os.environ.get("AGENTPLANE_API_KEY") or None
        return Target(url.rstrip("/") if url else None, key)


target = Target()


class ApiError(AgentplaneError):
    """A problem+json answer of the API, kept as the server said it."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        extra = {k: v for k, v in body.items() if k not in ("type", "title", "status", "detail")}
        super().__init__(str(body.get("detail") or body.get("title") or status), **extra)
        self.status = status
        self.type = str(body.get("type", "error")).rsplit("/", 1)[-1]
        self.title = str(body.get("title") or "Error")


@dataclass
class Api:
    http: httpx.AsyncClient
    remote: bool
    # Local only: the database, settings and principal the in-process API serves.
    db: Any = None
    settings: Any = None
    principal: Any = None
    where: str = field(default="")

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            r = await self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ValidationFailed(f"cannot reach {self.where}: {exc}") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"detail": r.text[:300] or r.reason_phrase}
            if not isinstance(body, dict):
                body = {"detail": str(body)[:300]}
            if isinstance(body.get("error"), dict):  # the OpenAI-shaped routes
                body = {"detail": body["error"].get("message")}
            raise ApiError(r.status_code, body)
        return r

    async def get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return (await self.request("GET", path, params=clean)).json()

    async def send(self, method: str, path: str, body: Any = None) -> Any:
        r = await self.request(method, path, json=body)
        return None if r.status_code == 204 or not r.content else r.json()

    async def full_id(self, listing: str, ref: str, noun: str, **filters: Any) -> str:
        """The whole id that ref (an id or a unique start of one) names among the rows of
        the listing route (which takes `id_prefix`)."""

        async def starting(prefix: str) -> list[str]:
            found = await self.get(listing, id_prefix=prefix, limit=2, **filters)
            return [x["id"] for x in (found["items"] if isinstance(found, dict) else found)]

        return await ids.resolve(ref, noun, starting)


@contextlib.asynccontextmanager
async def connected(
    tenant: str | None, conf: Any = None, db: Any = None, *, here: bool = False
) -> AsyncIterator[Api]:
    """An Api for the configured target; locally (or with `here`) over `db`, opened by
    the caller."""
    where = target.resolved()
    if where.url and not here:
        if not where.api_key:
            raise ValidationFailed(
                f"--url {where.url} needs an API key: give --api-key or set AGENTPLANE_API_KEY"
            )
        headers = {"Authorization": f"Bearer {where.api_key}", "User-Agent": "agentplane-cli"}
        async with httpx.AsyncClient(base_url=where.url, headers=headers, timeout=60) as http:
            yield Api(http, remote=True, where=where.url)
        return
    from agentplane.app import create_app
    from agentplane.auth.deps import authenticated
    from agentplane.auth.models import Identity
    from agentplane.tenancy.tenants import owner_principal

    principal = await owner_principal(db, tenant)
    app = create_app(conf, db=db)
    me = Identity(principal=principal, email="", tenant_slug=tenant or "", limit=0,
                  remaining=0, reset_seconds=0)

    async def as_owner() -> Identity:
        return me

    app.dependency_overrides[authenticated] = as_owner
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://agentplane.local") as http:
        yield Api(http, remote=False, db=db, settings=conf, principal=principal,
                  where="the local database")


def remote() -> bool:
    return target.resolved().url is not None


def call(tenant: str | None, fn: Callable[[Api], Awaitable[T]]) -> T:
    """Run fn(api) against the target: a shared server, or this process's database
    (started, and migrated, as any command does)."""
    import asyncio

    if remote():

        async def over_http() -> T:
            async with connected(tenant) as api:
                return await fn(api)

        return asyncio.run(over_http())
    from agentplane.db.setup import with_database

    async def here(db: Any) -> T:
        async with connected(tenant, db.settings, db) as api:
            return await fn(api)

    return with_database(here)
