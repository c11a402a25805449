"""Indexes the dashboard's pages read by: a run's LLM calls in the order they started
(the waterfall, a page at a time, however many calls the run made), a run's calls
without a price (counted for every run a list shows), and the tasks that finished in a
period (the overview's duration percentiles).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-02
"""

from agentplane.db.migrations import sql

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sql(
        """
        CREATE INDEX llm_calls_run_idx ON llm_calls (tenant_id, run_id, created_at, id)
            WHERE run_id IS NOT NULL;
        CREATE INDEX llm_calls_unpriced_idx ON llm_calls (tenant_id, run_id)
            WHERE run_id IS NOT NULL AND status = 'completed' AND cost_usd IS NULL;
        CREATE INDEX tasks_finished_idx ON tasks (tenant_id, completed_at)
            INCLUDE (duration_ms, status) WHERE completed_at IS NOT NULL;
        """
    )


def downgrade() -> None:
    sql(
        """
        DROP INDEX tasks_finished_idx;
        DROP INDEX llm_calls_unpriced_idx;
        DROP INDEX llm_calls_run_idx;
        """
    )
