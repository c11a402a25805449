"""Alembic revisions, written as SQL. Helpers shared by revisions live here."""

from __future__ import annotations

from alembic import op


def app_role() -> str:
    return op.get_context().config.attributes["app_role"]


def sql(text: str) -> None:
    """Run SQL with {app} standing for the (quoted) application role."""
    op.execute(text.replace("{app}", f'"{app_role()}"'))


def package_sql(package: str, name: str) -> str:
    """The current definitions a package keeps in `<package>/sql/<name>` (package data):
    a migration that changes them applies the file."""
    from importlib.resources import files

    return (files("agentplane") / package / "sql" / name).read_text()


def tenant_rls(table: str) -> str:
    """SQL that isolates a tenant-scoped table by app.tenant_id, even for its owner.

    The owner keeps access through its own policy (migrations, admin paths); any
    other role sees only the rows of the tenant set for the transaction, and none
    when no tenant is set.
    """
    return f"""
    ALTER TABLE {table} ENABLE ROW LEVEL SECURITY;
    ALTER TABLE {table} FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON {table}
        USING (tenant_id = app_current_tenant())
        WITH CHECK (tenant_id = app_current_tenant());
    CREATE POLICY owner_access ON {table} TO {owner_role()} USING (true) WITH CHECK (true);
    """


def owner_role() -> str:
    return f'"{op.get_context().config.attributes["owner_role"]}"'
