"""Alembic revisions, written as SQL, and the sql/ files they apply.

Where a definition lives. Tables, types, indexes, grants and data changes are written in
the revisions (versions/), each one reversible. Functions, views, triggers and row-level
security policies live in `sql/` files beside the package they belong to
(queue/sql/jobs.sql, runtime/sql/batches.sql, tenancy/sql/policies.sql, ...): a file holds
the current definitions, written so that applying it again changes nothing (CREATE OR
REPLACE; DROP POLICY IF EXISTS, then CREATE POLICY). A database migrated from empty has
exactly the definitions of the files, each in one file only (tests/db/test_sql_home.py).

How the files are applied. A revision names the files it applies in `sql_files` (each
path with the digest() of the text it applied) and calls `apply_sql(revision, sql_files)`;
0015 applies them all. To change or add a definition, edit its file and add a revision
that names the file with its new digest and, in its downgrade, puts back what it
replaced, written out literally (no revision reads another's text). A function whose
arguments or result change gets a new name instead (`queue_claim_v2`), defined beside the
old one, which a later revision drops once no running worker calls it: in a rolling
deploy old and new workers share one database.

A file is applied as it is now, not as it was when a revision naming it was written, so
an upgrade applies each file once, at the last revision that names it, where everything
the file needs exists; an earlier revision that names the file skips it, and until then
its objects stay as the revisions before left them. An upgrade from empty thus builds
the history from the revisions' own text and ends with the files as they are.

A revision is never edited once released (tests/db/test_released_revisions.py checks
each one's sha256 against released.txt): a change is a new revision. Released revisions
call the helpers below, so what a helper does does not change either. Some early
revisions (0003-0011) pass 400 lines: they wrote their functions inline, before the sql/
files, and being released they stay as they are; the current text of each function is
in its package's file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from alembic import op


def app_role() -> str:
    return op.get_context().config.attributes["app_role"]


def sql(text: str) -> None:
    """Run SQL with {app} standing for the (quoted) application role."""
    op.execute(text.replace("{app}", f'"{app_role()}"'))


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


# --- the sql/ files ---------------------------------------------------------------------


def read_sql(path: str) -> str:
    """The text of a sql file, by its path in the agentplane package (package data)."""
    from importlib.resources import files

    return (files("agentplane") / path).read_text()


def definitions(path: str, *, app: str, owner: str) -> str:
    """A sql file's SQL as it is run: {app} and {owner} stand for the (quoted) roles."""

    def quoted(role: str) -> str:
        return '"' + role.replace('"', '""') + '"'

    return read_sql(path).replace("{app}", quoted(app)).replace("{owner}", quoted(owner))


def digest(text: str) -> str:
    """The sha256 of a sql file's statements: lines that are only a comment, blank lines
    and trailing spaces do not count, so a file's comments may change without a revision."""
    lines = (line.rstrip() for line in text.splitlines())
    kept = "\n".join(line for line in lines if line and not line.lstrip().startswith("--"))
    return hashlib.sha256(kept.encode()).hexdigest()


def apply_sql(revision: str, sql_files: Mapping[str, str]) -> None:
    """Apply the files `revision` names, but those a later revision names too."""
    from alembic import context

    later: set[str] = set()
    for script in context.script.walk_revisions():  # the head first
        if script.revision == revision:
            break
        later.update(getattr(script.module, "sql_files", ()))
    config = op.get_context().config.attributes
    for path in sql_files:
        if path not in later:
            op.execute(definitions(path, app=config["app_role"], owner=config["owner_role"]))
