"""The gateway's tags, projects and response cache.

LLM calls gain the project and tags a gateway request names (x-agentplane-project,
x-agentplane-tags) and `cached`: the answer came from the tenant's response cache
(`gateway_cache`, gateway/sql/cache.sql), cost nothing and spent no tokens (its
cost_source is `cache`). The system task `gateway_cache` deletes expired answers.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-03
"""

from agentplane.db.migrations import apply_sql, sql

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None

sql_files = {
    "gateway/sql/cache.sql": "fe258aae6d24125e8fb01be89f75f07421cb0ea03923c4c896a732564309d980",
}


def upgrade() -> None:
    sql("""
    ALTER TABLE llm_calls
        ADD COLUMN project_id uuid,
        ADD COLUMN tags text[] NOT NULL DEFAULT '{}',
        ADD COLUMN cached boolean NOT NULL DEFAULT false,
        DROP CONSTRAINT llm_calls_cost_source_check,
        ADD CONSTRAINT llm_calls_cost_source_check
            CHECK (cost_source IN ('price', 'provider', 'unknown', 'cache'));
    -- Most calls have neither: only those that do are indexed.
    CREATE INDEX llm_calls_tags_idx ON llm_calls USING gin (tags) WHERE tags <> '{}';
    CREATE INDEX llm_calls_project_idx ON llm_calls (tenant_id, project_id, created_at)
        WHERE project_id IS NOT NULL;

    CREATE TABLE gateway_cache (
        tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        key         bytea NOT NULL,
        model       text NOT NULL,
        response    jsonb NOT NULL,
        created_at  timestamptz NOT NULL DEFAULT now(),
        expires_at  timestamptz NOT NULL,
        PRIMARY KEY (tenant_id, key)
    );
    CREATE INDEX gateway_cache_expires_idx ON gateway_cache (expires_at);
    INSERT INTO system_tasks (name, every) VALUES ('gateway_cache', '10 minutes');
    """)
    apply_sql(revision, sql_files)


def downgrade() -> None:
    sql("""
    DELETE FROM system_tasks WHERE name = 'gateway_cache';
    DROP FUNCTION gateway_cache_expire();
    DROP TABLE gateway_cache;
    DELETE FROM llm_calls WHERE cost_source = 'cache';
    ALTER TABLE llm_calls
        DROP CONSTRAINT llm_calls_cost_source_check,
        ADD CONSTRAINT llm_calls_cost_source_check
            CHECK (cost_source IN ('price', 'provider', 'unknown')),
        DROP COLUMN cached,
        DROP COLUMN tags,
        DROP COLUMN project_id;
    """)
