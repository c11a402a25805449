"""A tenant transaction as a dependency, for the agents and workflows routers.

Defaults rather than Annotated inside the closure: `api.deps.tenant_connection_for`
annotates with a closure-local name that does not resolve under postponed evaluation,
so FastAPI would read `principal` as a query field. (Drop this once deps is fixed.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends

from agentplane.api.deps import Principal, get_db, requires
from agentplane.db.pool import Connection, Database


def tenant_connection(*scopes: str):
    check = requires(*scopes)

    async def dependency(
        principal: Principal = Depends(check), db: Database = Depends(get_db)
    ) -> AsyncIterator[Connection]:
        async with db.tenant_connection(principal.tenant_id) as conn:
            yield conn

    return dependency


def conn_for(*scopes: str):
    """`Annotated[Connection, ...]`: committed before the response is sent."""
    return Annotated[Connection, Depends(tenant_connection(*scopes), scope="function")]
