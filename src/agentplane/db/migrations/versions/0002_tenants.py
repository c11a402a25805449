"""Tenants: the isolation boundary.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from agentplane.db.migrations import owner_role, sql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sql("""
    CREATE TABLE tenants (
        id                   uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
        slug                 text NOT NULL CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,98}[a-z0-9]?$'),
        plan                 text NOT NULL DEFAULT 'free'
                             CHECK (plan IN ('free', 'pro', 'enterprise')),
        token_limit          bigint NOT NULL DEFAULT 10000 CHECK (token_limit >= 0),
        monthly_token_usage  bigint NOT NULL DEFAULT 0 CHECK (monthly_token_usage >= 0),
        rate_limit_per_hour  integer NOT NULL DEFAULT 1000 CHECK (rate_limit_per_hour >= 0),
        settings             jsonb NOT NULL DEFAULT '{}',
        metadata             jsonb NOT NULL DEFAULT '{}',
        is_active            boolean NOT NULL DEFAULT true,
        created_at           timestamptz NOT NULL DEFAULT now(),
        updated_at           timestamptz NOT NULL DEFAULT now(),
        deleted_at           timestamptz
    );
    CREATE UNIQUE INDEX tenants_slug_key ON tenants (slug);
    CREATE TRIGGER tenants_updated_at BEFORE UPDATE ON tenants
        FOR EACH ROW EXECUTE FUNCTION set_updated_at();

    -- A tenant connection sees its own tenant row only.
    ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
    ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON tenants
        USING (id = app_current_tenant()) WITH CHECK (id = app_current_tenant());
    """)
    sql(f"CREATE POLICY owner_access ON tenants TO {owner_role()} USING (true) WITH CHECK (true)")


def downgrade() -> None:
    sql("DROP TABLE tenants")
