"""Scoped connections and the translation of driver errors."""

from __future__ import annotations

import uuid

import psycopg
import pytest

from agentplane.db.errors import translate_errors
from agentplane.db.pool import Database
from agentplane.errors import Conflict, DatabaseUnavailable, NotFound, ValidationFailed


async def test_tenant_connection_sets_the_tenant_for_its_transaction_only(db: Database) -> None:
    tenant = uuid.uuid4()
    async with db.tenant_connection(tenant) as conn:
        row = await (await conn.execute("SELECT app_current_tenant() AS t, current_user AS u")) \
            .fetchone()
    assert row == {"t": tenant, "u": "agentplane_app"}
    # The setting is transaction-local: a pooled connection reused later has no tenant.
    for _ in range(db.settings.pool_max_size):
        async with db.app_connection() as conn:
            row = await (await conn.execute("SELECT app_current_tenant() AS t")).fetchone()
            assert row == {"t": None}


async def test_app_role_cannot_bypass_rls_and_admin_is_the_owner(db: Database) -> None:
    async with db.app_connection() as conn:
        row = await (await conn.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user"
        )).fetchone()
    assert row == {"rolsuper": False, "rolbypassrls": False}
    async with db.admin_connection() as conn:
        owner = await (await conn.execute("SELECT current_user AS u")).fetchone()
    assert owner["u"] != "agentplane_app"


async def test_tenants_are_isolated_by_rls(db: Database) -> None:
    async with db.admin_connection() as conn:
        ids = []
        for slug in ("rls-a", "rls-b"):
            cur = await conn.execute(
                "INSERT INTO tenants (name, slug) VALUES (%s, %s) RETURNING id", [slug, slug])
            ids.append((await cur.fetchone())["id"])
    a, b = ids
    async with db.tenant_connection(a) as conn:
        rows = await (await conn.execute("SELECT id FROM tenants")).fetchall()
    assert [r["id"] for r in rows] == [a]
    async with db.app_connection() as conn:
        assert await (await conn.execute("SELECT id FROM tenants")).fetchall() == []
    with pytest.raises(NotFound):
        async with db.tenant_connection(a) as conn:
            await conn.execute("INSERT INTO tenants (id, name, slug) VALUES (%s, 'x', 'rls-x')",
                               [uuid.uuid4()])
    async with db.tenant_connection(a) as conn:
        cur = await conn.execute("UPDATE tenants SET name = 'hijacked' WHERE id = %s", [b])
        assert cur.rowcount == 0


async def test_driver_errors_become_agentplane_errors(db: Database) -> None:
    async with db.admin_connection() as conn:
        await conn.execute("INSERT INTO tenants (name, slug) VALUES ('dup', 'dup-slug')")
    with pytest.raises(Conflict, match="slug already exists"):
        async with db.admin_connection() as conn:
            await conn.execute("INSERT INTO tenants (name, slug) VALUES ('dup', 'dup-slug')")
    with pytest.raises(ValidationFailed):
        async with db.admin_connection() as conn:
            await conn.execute("INSERT INTO tenants (name, slug, plan) VALUES ('p', 'p', 'gold')")
    with pytest.raises(ValidationFailed):
        async with db.admin_connection() as conn:
            await conn.execute("SELECT 'not-a-uuid'::uuid")
    with pytest.raises(NotFound, match="no such thing"):
        async with db.admin_connection() as conn:
            await conn.execute(
                "DO $$ BEGIN RAISE EXCEPTION 'no such thing' USING ERRCODE = 'AP404'; END $$")


def test_operational_errors_become_database_unavailable() -> None:
    with pytest.raises(DatabaseUnavailable), translate_errors():
        raise psycopg.OperationalError("server closed the connection unexpectedly")
