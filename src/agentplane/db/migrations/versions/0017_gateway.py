"""The gateway: what its calls record, and tenants' aliases (virtual models).

llm_calls gains the gateway route that made a call (`endpoint`, NULL for the runtime's
calls), the HTTP request it answered (`request_id`), the reasoning tokens of its
completion, whether its tokens were counted here because the provider reported none
(`tokens_estimated`), of a streamed call its chunks and the gaps between them (p50 and
p99; its time to first token is ttft_ms), and the status `cancelled`: a stream its
caller closed, charged for what it generated. gateway_aliases holds each tenant's
aliases: a name, a strategy and the deployments (model names) it routes to;
gateway/sql/routing.sql resolves names.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from agentplane.db.migrations import apply_sql, sql

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

sql_files = {
    "gateway/sql/routing.sql": "25865a4ab7aa52f55ad2445381b66ffed71af3b1948fa62cf050d2e793d68b7c",
}


def upgrade() -> None:
    sql("""
    ALTER TABLE llm_calls
        ADD COLUMN endpoint text CHECK (length(endpoint) BETWEEN 1 AND 64),
        ADD COLUMN request_id text CHECK (length(request_id) BETWEEN 1 AND 128),
        ADD COLUMN reasoning_tokens integer NOT NULL DEFAULT 0 CHECK (reasoning_tokens >= 0),
        ADD COLUMN tokens_estimated boolean NOT NULL DEFAULT false,
        ADD COLUMN stream_chunks integer CHECK (stream_chunks >= 0),
        ADD COLUMN chunk_gap_p50_ms real CHECK (chunk_gap_p50_ms >= 0),
        ADD COLUMN chunk_gap_p99_ms real CHECK (chunk_gap_p99_ms >= 0),
        DROP CONSTRAINT llm_calls_status_check,
        ADD CONSTRAINT llm_calls_status_check
            CHECK (status IN ('pending', 'running', 'completed', 'failed', 'cancelled'));
    CREATE INDEX llm_calls_request_idx ON llm_calls (tenant_id, request_id)
        WHERE request_id IS NOT NULL;

    CREATE TABLE gateway_aliases (
        id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
        tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        name         text NOT NULL CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$'),
        strategy     text NOT NULL DEFAULT 'weighted'
                     CHECK (strategy IN ('weighted', 'priority', 'latency', 'cost')),
        deployments  jsonb NOT NULL CHECK (jsonb_typeof(deployments) = 'array'
                                           AND jsonb_array_length(deployments) > 0),
        created_at   timestamptz NOT NULL DEFAULT now(),
        updated_at   timestamptz NOT NULL DEFAULT now(),
        UNIQUE (tenant_id, name)
    );
    """)
    apply_sql(revision, sql_files)


def downgrade() -> None:
    sql("""
    DROP FUNCTION gateway_models();
    DROP FUNCTION gateway_route(text);
    DROP FUNCTION gateway_target(text);
    DROP FUNCTION gateway_vendor(text, text);
    DROP TABLE gateway_aliases;
    DROP INDEX llm_calls_request_idx;
    UPDATE llm_calls SET status = 'failed' WHERE status = 'cancelled';
    ALTER TABLE llm_calls
        DROP CONSTRAINT llm_calls_status_check,
        ADD CONSTRAINT llm_calls_status_check
            CHECK (status IN ('pending', 'running', 'completed', 'failed')),
        DROP COLUMN chunk_gap_p99_ms,
        DROP COLUMN chunk_gap_p50_ms,
        DROP COLUMN stream_chunks,
        DROP COLUMN tokens_estimated,
        DROP COLUMN reasoning_tokens,
        DROP COLUMN request_id,
        DROP COLUMN endpoint;
    """)
