"""Tenant isolation, proven at two levels with two tenants holding data.

SQL: every table with a tenant_id column (found in the catalog, so a future table
without a policy fails here) is forced under RLS; tenant A's connection sees only A's
rows, cannot write rows of B, and a connection with no tenant sees nothing.
HTTP: A's key on every resource route of B, by id, gets 404.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import psycopg
import pytest

from agentplane.auth import api as auth_api
from agentplane.auth import login as auth_login
from agentplane.db.pool import Database
from agentplane.tenancy import api as tenancy_api
from agentplane.tenancy import members, projects, signup
from agentplane.tenancy.models import RegisterIn
from agentplane.tenancy.users import NewUser
from tests.conftest import TenantContext, make_tenant

# Tables of the identity migration; each must hold rows of both tenants here.
IDENTITY_TABLES = {
    "tenants",
    "memberships",
    "invitations",
    "projects",
    "project_members",
    "api_keys",
    "login_sessions",
    "audit_logs",
    "rate_limits",
}


async def _fill(db: Database, client: httpx.AsyncClient, ctx: TenantContext) -> dict[str, Any]:
    """Rows in every identity table for ctx's tenant; returns the ids HTTP tests need."""
    from agentplane.auth import scopes as sc
    from agentplane.auth.models import Principal

    owner = Principal(ctx.tenant_id, ctx.user_id, "owner", sc.granted("owner"), None)
    project = await projects.create_project(db, owner, {"name": "P", "slug": "p"})
    dev_id, _ = await members.add_member(
        db,
        ctx.tenant_id,
        NewUser(email=f"dev@{ctx.slug}.test", password="a long passphrase 1"),
        "developer",
    )
    await projects.put_project_member(db, owner, project["id"], dev_id, "developer")
    invitation, _ = await members.invite(db, owner, f"new@{ctx.slug}.test", "viewer")
    await auth_login.login(db, f"dev@{ctx.slug}.test", "a long passphrase 1", None)
    r = await client.get("/me", headers=ctx.headers)  # a rate-limit counter row
    assert r.status_code == 200
    return {
        "tenant_id": ctx.tenant_id,
        "user_id": dev_id,
        "project_id": project["id"],
        "invitation_id": invitation["id"],
        "key_id": ctx.api_key_id,
    }


@pytest.fixture(scope="module")
async def two_tenants(db: Database, app) -> dict[str, Any]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        a = await make_tenant(db, slug="iso-a")
        b = await make_tenant(db, slug="iso-b")
        ids_a = await _fill(db, client, a)
        ids_b = await _fill(db, client, b)
    return {"a": a, "b": b, "ids_a": ids_a, "ids_b": ids_b}


async def _tenant_scoped_tables(db: Database) -> list[str]:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            """SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p')
                  AND (c.relname = 'tenants' OR EXISTS (
                       SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                          AND a.attname = 'tenant_id' AND NOT a.attisdropped))
                  AND NOT c.relispartition
                ORDER BY 1"""
        )
        return [r["relname"] for r in await cur.fetchall()]


def _key(table: str) -> str:
    return "id" if table == "tenants" else "tenant_id"


async def _app_can(db: Database, table: str, privilege: str) -> bool:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT has_table_privilege(%s, %s, %s) AS ok",
            [db.settings.app_role, f"public.{table}", privilege],
        )
        row = await cur.fetchone()
    return bool(row and row["ok"])


async def test_every_tenant_scoped_table_is_forced_under_a_tenant_policy(db: Database) -> None:
    tables = await _tenant_scoped_tables(db)
    assert set(tables) >= IDENTITY_TABLES
    async with db.admin_connection() as conn:
        for table in tables:
            cur = await conn.execute(
                """SELECT c.relrowsecurity, c.relforcerowsecurity,
                          array(SELECT pg_get_expr(p.polqual, p.polrelid) || ' | '
                                       || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
                                  FROM pg_policy p
                                 WHERE p.polrelid = c.oid AND p.polroles = '{0}'
                                   AND p.polcmd = '*') AS policies
                     FROM pg_class c WHERE c.oid = %s::regclass""",
                [f"public.{table}"],
            )
            row = await cur.fetchone()
            assert row["relrowsecurity"] and row["relforcerowsecurity"], table
            expected = f"({_key(table)} = app_current_tenant())"
            assert f"{expected} | {expected}" in row["policies"], (table, row["policies"])


async def test_no_other_way_around_the_policies(db: Database) -> None:
    """Partitions, other schemas and views hold tenant rows too: each is either out of
    the application role's reach or filtered to the transaction's tenant."""
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            """SELECT n.nspname, c.relname, c.relkind::text AS kind, c.relispartition,
                      c.relrowsecurity AND c.relforcerowsecurity AS forced,
                      coalesce(c.reloptions, '{}') AS options,
                      CASE WHEN c.relkind = 'v' THEN pg_get_viewdef(c.oid) END AS body,
                      has_schema_privilege(%(app)s, n.oid, 'USAGE')
                        AND has_any_column_privilege(%(app)s, c.oid, 'SELECT, INSERT, UPDATE')
                        AS reachable
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
                  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                                 AND a.attname = 'tenant_id' AND NOT a.attisdropped)""",
            {"app": db.settings.app_role},
        )
        rows = await cur.fetchall()
    partitions = [r for r in rows if r["relispartition"]]
    views = [r for r in rows if r["kind"] in ("v", "m")]
    assert partitions and views  # events and usage records are partitioned; reports are views
    for r in rows:
        name = f"{r['nspname']}.{r['relname']}"
        if not r["reachable"]:
            continue
        assert r["nspname"] == "public", f"{name}: reachable outside public"
        assert not r["relispartition"], f"{name}: a partition reachable around its parent"
        if r["kind"] == "v":
            # A view runs as its owner: it must filter by the tenant itself, or run as
            # the caller (security_invoker) so the tables' policies apply.
            invoker = "security_invoker=true" in r["options"]
            assert invoker or (
                "security_barrier=true" in r["options"]
                and "(tenant_id = app_current_tenant())" in r["body"]
            ), f"{name}: a view that shows every tenant"
        else:
            assert r["kind"] in ("r", "p") and r["forced"], f"{name}: no forced policy"


async def test_a_sees_only_its_own_rows(db: Database, two_tenants: dict[str, Any]) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    for table in await _tenant_scoped_tables(db):
        async with db.admin_connection() as conn:
            cur = await conn.execute(
                f"SELECT count(*) FILTER (WHERE {_key(table)} = %s) AS mine,"
                f" count(*) FILTER (WHERE {_key(table)} = %s) AS theirs FROM {table}",
                [a.tenant_id, b.tenant_id],
            )
            counts = await cur.fetchone()
        if table in IDENTITY_TABLES:  # B's own rows, not any other test's, are there to hide
            assert counts["mine"] > 0 and counts["theirs"] > 0, table
        if not await _app_can(db, table, "SELECT"):
            continue  # the application cannot read it at all (rate_limits)
        async with db.tenant_connection(a.tenant_id) as conn:
            cur = await conn.execute(f"SELECT * FROM {table}")
            rows = await cur.fetchall()
        # Rows of no tenant (a shared catalog, tenant_id NULL) may be readable by all.
        assert {r[_key(table)] for r in rows} <= {a.tenant_id, None}, table
        assert sum(r[_key(table)] == a.tenant_id for r in rows) == counts["mine"], table


async def test_without_a_tenant_nothing_is_visible(
    db: Database, two_tenants: dict[str, Any]
) -> None:
    for table in await _tenant_scoped_tables(db):
        if not await _app_can(db, table, "SELECT"):
            continue
        async with db.app_connection() as conn:
            cur = await conn.execute(
                f"SELECT count(*) AS n FROM {table} WHERE {_key(table)} IS NOT NULL"
            )
            assert (await cur.fetchone())["n"] == 0, table
    async with db.app_connection() as conn:
        cur = await conn.execute("SELECT count(*) AS n FROM users")
        assert (await cur.fetchone())["n"] == 0


async def _raw_tenant(db: Database, tenant_id: uuid.UUID):
    conn = await db.app_pool.getconn()
    await conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant_id)])
    await conn.commit()
    return conn


async def test_a_cannot_insert_or_move_rows_into_b(
    db: Database, two_tenants: dict[str, Any]
) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    conn = await _raw_tenant(db, a.tenant_id)
    checked = []
    try:
        for table in await _tenant_scoped_tables(db):
            async with db.admin_connection() as admin:
                cur = await admin.execute(
                    f"SELECT row_to_json(t) AS j FROM {table} t WHERE {_key(table)} = %s LIMIT 1",
                    [b.tenant_id],
                )
                row = await cur.fetchone()
            if row is None:
                continue
            record = row["j"]
            if "id" in record and table != "tenants":
                record["id"] = str(uuid.uuid4())
            if await _app_can(db, table, "INSERT"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    await conn.execute(
                        f"INSERT INTO {table}"
                        f" SELECT * FROM json_populate_record(NULL::{table}, %s)",
                        [json.dumps(record)],
                    )
                await conn.rollback()
            if await _app_can(db, table, "UPDATE"):
                cur = await conn.execute(
                    f"SELECT count(*) AS n FROM {table} WHERE {_key(table)} = %s", [a.tenant_id]
                )
                if (await cur.fetchone())["n"]:
                    with pytest.raises(psycopg.errors.InsufficientPrivilege):
                        await conn.execute(f"UPDATE {table} SET {_key(table)} = %s", [b.tenant_id])
                await conn.rollback()
                cur = await conn.execute(
                    f"UPDATE {table} SET {_key(table)} = {_key(table)} WHERE {_key(table)} = %s",
                    [b.tenant_id],
                )
                assert cur.rowcount == 0, table
                await conn.rollback()
            if await _app_can(db, table, "DELETE"):
                cur = await conn.execute(
                    f"DELETE FROM {table} WHERE {_key(table)} = %s", [b.tenant_id]
                )
                assert cur.rowcount == 0, table
                await conn.rollback()
            checked.append(table)
    finally:
        await conn.rollback()
        await conn.execute("RESET app.tenant_id")
        await conn.commit()
        await db.app_pool.putconn(conn)
    assert IDENTITY_TABLES - {"rate_limits"} <= set(checked)


async def test_users_are_visible_only_as_members(db: Database, two_tenants: dict[str, Any]) -> None:
    a, b = two_tenants["a"], two_tenants["b"]
    async with db.tenant_connection(a.tenant_id) as conn:
        cur = await conn.execute("SELECT id FROM users")
        seen = {r["id"] for r in await cur.fetchall()}
        cur = await conn.execute("UPDATE users SET full_name = 'x' WHERE id = %s", [b.user_id])
        assert cur.rowcount == 0
    assert a.user_id in seen and b.user_id not in seen
    assert two_tenants["ids_b"]["user_id"] not in seen


async def test_audit_log_is_append_only_for_the_application(
    db: Database, two_tenants: dict[str, Any]
) -> None:
    a = two_tenants["a"]
    for statement in ("UPDATE audit_logs SET event_type = 'x'", "DELETE FROM audit_logs"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            async with db.app_pool.connection() as conn, conn.transaction():
                await conn.execute(
                    "SELECT set_config('app.tenant_id', %s, true)", [str(a.tenant_id)]
                )
                await conn.execute(statement)


async def test_definer_functions_are_for_the_app_only(db: Database) -> None:
    async with db.admin_connection() as conn:
        cur = await conn.execute(
            """SELECT p.proname, p.proconfig,
                      has_function_privilege('public', p.oid, 'EXECUTE') AS public_exec
                 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                WHERE n.nspname = 'public' AND p.prosecdef"""
        )
        rows = await cur.fetchall()
    assert {r["proname"] for r in rows} >= {"auth_api_key", "auth_login_lookup", "queue_recover"}
    for r in rows:
        assert any(c.startswith("search_path=") for c in r["proconfig"] or []), r["proname"]
        assert not r["public_exec"], r["proname"]


# --- HTTP: every resource route of B, by id, with A's key -------------------------------

BODIES = {
    ("PATCH", "/v1/tenants/{tenant_id}"): {"name": "stolen"},
    ("PATCH", "/v1/members/{user_id}"): {"role": "viewer"},
    ("PATCH", "/v1/projects/{project_id}"): {"name": "stolen"},
    ("PUT", "/v1/projects/{project_id}/members/{user_id}"): {"role": "viewer"},
}


def _id_routes() -> list[tuple[str, str]]:
    routes = []
    for router in (auth_api.router, tenancy_api.router):
        for route in router.routes:
            if "{" in route.path:
                routes.extend((m, route.path) for m in sorted(route.methods))
    return routes


async def _snapshot(db: Database, tenant_id: uuid.UUID) -> list[Any]:
    out = []
    async with db.admin_connection() as conn:
        for table in (
            "tenants",
            "memberships",
            "projects",
            "project_members",
            "api_keys",
            "invitations",
        ):
            cur = await conn.execute(
                f"SELECT row_to_json(t)::text AS j FROM {table} t WHERE {_key(table)} = %s"
                " ORDER BY 1",
                [tenant_id],
            )
            out.append([r["j"] for r in await cur.fetchall()])
    return out


async def test_a_key_on_b_resources_gets_404(
    client: httpx.AsyncClient, db: Database, two_tenants: dict[str, Any]
) -> None:
    a, ids_b, ids_a = two_tenants["a"], two_tenants["ids_b"], two_tenants["ids_a"]
    before = await _snapshot(db, ids_b["tenant_id"])
    routes = _id_routes()
    assert len(routes) >= 15
    for method, path in routes:
        url = path.format(**ids_b)
        r = await client.request(method, url, headers=a.headers, json=BODIES.get((method, path)))
        assert r.status_code == 404, (method, url, r.status_code, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        # Mixed: A's own project with B's user is still "not found".
        if "{project_id}" in path and "{user_id}" in path:
            url = path.format(**{**ids_b, "project_id": ids_a["project_id"]})
            r = await client.request(
                method, url, headers=a.headers, json=BODIES.get((method, path))
            )
            assert r.status_code == 404, (method, url, r.text)
    assert await _snapshot(db, ids_b["tenant_id"]) == before


async def test_register_sees_no_other_tenant(client: httpx.AsyncClient, db: Database) -> None:
    tokens = await signup.register(
        db, RegisterIn(email="solo@iso.test", password="a long passphrase 2", tenant_slug="solo")
    )
    r = await client.get("/v1/members", headers={"Authorization": f"Bearer {tokens.access_token}"})
    assert r.status_code == 200
    assert [m["email"] for m in r.json()] == ["solo@iso.test"]
