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
    # Under row-level security the key is left out of the error: the constraint's name
    # still tells the field, never the tenant.
    tenant_id = uuid.uuid4()
    async with db.admin_connection() as conn:
        await conn.execute("INSERT INTO tenants (id, name, slug) VALUES (%s, 'r', 'rls-dup')",
                           [tenant_id])
    with pytest.raises(Conflict) as caught:
        async with db.tenant_connection(tenant_id) as conn:
            for _ in range(2):
                await conn.execute(
                    "INSERT INTO agents (tenant_id, slug, name, role, model) "
                    "VALUES (app_current_tenant(), 'same', 'n', 'r', 'offline/offline-1')")
    assert caught.value.detail == "slug already exists"
    assert caught.value.extra["errors"] == [{"field": "slug", "message": "taken"}]
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


async def test_updated_at_is_kept_by_a_trigger_on_every_table_that_has_it(db: Database) -> None:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            """SELECT c.relname, EXISTS (
                      SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                       WHERE t.tgrelid = c.oid AND p.proname = 'set_updated_at'
                         AND t.tgtype & 2 = 2 AND t.tgtype & 16 = 16) AS kept  -- BEFORE UPDATE
                 FROM pg_class c
                 JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'updated_at'
                WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
                  AND NOT c.relispartition"""
        )
        tables = {r["relname"]: r["kept"] for r in await cur.fetchall()}
        assert {"tenants", "users", "memberships", "projects", "tasks"} <= tables.keys()
        # retention_policies.updated_at says when the policy changed (its writer sets it),
        # not when it last ran.
        assert [name for name, kept in tables.items() if not kept] == ["retention_policies"]
        # And it works: a later UPDATE moves updated_at, whatever the statement says.
        cur = await conn.execute(
            "INSERT INTO tenants (name, slug, updated_at) VALUES ('u', 'upd-at', now() - '1 day'"
            "::interval) RETURNING id, updated_at"
        )
        row = await cur.fetchone()
        cur = await conn.execute(
            "UPDATE tenants SET name = 'v', updated_at = '2000-01-01' WHERE id = %s"
            " RETURNING updated_at",
            [row["id"]],
        )
        assert (await cur.fetchone())["updated_at"] > row["updated_at"]
