"""Calls in flight per provider, shared between processes, and the alias strategy
`least_in_flight` that reads them.

`llm_in_flight` holds each process's count of the calls it has in flight per provider
(llm/sql/in_flight.sql), written about once a second while the counts change.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-03
"""

from agentplane.db.migrations import apply_sql, sql

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None

sql_files = {
    "llm/sql/in_flight.sql": "4ccf1425735429847254b44dc32f151fb66fbbacad5a1a09ab99ca3fa1f38aa4",
}

STRATEGIES = "'weighted', 'priority', 'latency', 'cost'"


def upgrade() -> None:
    sql(f"""
    CREATE TABLE llm_in_flight (
        tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
        provider_id  uuid NOT NULL,
        process      uuid NOT NULL,
        calls        integer NOT NULL CHECK (calls > 0),
        at           timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (tenant_id, provider_id, process)
    );
    ALTER TABLE gateway_aliases
        DROP CONSTRAINT gateway_aliases_strategy_check,
        ADD CONSTRAINT gateway_aliases_strategy_check
            CHECK (strategy IN ({STRATEGIES}, 'least_in_flight'));
    """)
    apply_sql(revision, sql_files)


def downgrade() -> None:
    sql(f"""
    UPDATE gateway_aliases SET strategy = 'weighted' WHERE strategy = 'least_in_flight';
    ALTER TABLE gateway_aliases
        DROP CONSTRAINT gateway_aliases_strategy_check,
        ADD CONSTRAINT gateway_aliases_strategy_check CHECK (strategy IN ({STRATEGIES}));
    DROP TABLE llm_in_flight;
    """)
