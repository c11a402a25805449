"""Foundation: extensions, privileges of the application role, shared functions.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

import logging

import psycopg
from alembic import op
from sqlalchemy.exc import DBAPIError

from agentplane.db.migrations import sql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# pgcrypto, pg_trgm and btree_gin are wanted but optional: the schema relies only on
# core PostgreSQL (gen_random_uuid, sha256), so a server without them still works.
OPTIONAL = ("pgcrypto", "pg_trgm", "btree_gin")
EXTENSIONS = (*OPTIONAL, "vector")
log = logging.getLogger("agentplane.migrations")


def upgrade() -> None:
    bind = op.get_bind()
    available = {
        row[0]
        for row in bind.exec_driver_sql(
            "SELECT name FROM pg_available_extensions WHERE name = ANY(%(names)s)",
            {"names": list(EXTENSIONS)},
        )
    }
    skipped = []  # optional ones: nothing needs them, so one line at info says so
    for name in EXTENSIONS:
        if name not in available:
            if name in OPTIONAL:
                skipped.append(name)
            else:
                log.warning(
                    "extension %s is not available on this server; features that need it "
                    "are off",
                    name,
                )
            continue
        try:
            with bind.begin_nested():  # a refusal must not abort the whole migration
                bind.exec_driver_sql(f'CREATE EXTENSION IF NOT EXISTS "{name}"')
        except DBAPIError as exc:
            if not isinstance(exc.orig, psycopg.errors.InsufficientPrivilege):
                raise
            if name in OPTIONAL:
                skipped.append(name)
                continue
            # vector is not a trusted extension: only a superuser may create it.
            log.warning(
                "extension %s needs a superuser to create it (as one, run CREATE EXTENSION %s "
                "in this database); features that need it are off until then",
                name,
                name,
            )
    if skipped:
        log.info("optional extensions not installed (nothing needs them): %s", ", ".join(skipped))
    sql("""
    GRANT USAGE ON SCHEMA public TO {app};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {app};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {app};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT EXECUTE ON FUNCTIONS TO {app};
    -- Functions are not for PUBLIC: SECURITY DEFINER ones must be callable by the
    -- application role only.
    ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;

    -- The tenant of the current transaction, NULL when none is set.
    CREATE FUNCTION app_current_tenant() RETURNS uuid
        LANGUAGE sql STABLE PARALLEL SAFE
        AS $$ SELECT nullif(current_setting('app.tenant_id', true), '')::uuid $$;

    -- Keeps updated_at true on every UPDATE.
    CREATE FUNCTION set_updated_at() RETURNS trigger
        LANGUAGE plpgsql
        AS $$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
    """)


def downgrade() -> None:
    sql("""
    DROP FUNCTION set_updated_at();
    DROP FUNCTION app_current_tenant();
    ALTER DEFAULT PRIVILEGES GRANT EXECUTE ON FUNCTIONS TO PUBLIC;
    ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE EXECUTE ON FUNCTIONS FROM {app};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM {app};
    ALTER DEFAULT PRIVILEGES IN SCHEMA public
        REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {app};
    REVOKE USAGE ON SCHEMA public FROM {app};
    """)
    # Only what this owner may drop: a superuser may have created vector for it.
    owned = {
        row[0]
        for row in op.get_bind().exec_driver_sql(
            "SELECT extname FROM pg_extension WHERE pg_has_role(extowner, 'USAGE')"
        )
    }
    for name in reversed(EXTENSIONS):
        if name in owned:
            op.execute(f'DROP EXTENSION "{name}"')
