"""A run may name the model its tasks use (`agentplane run --model provider/model`).

NULL: each task uses its agent's model, as before.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-02
"""

from agentplane.db.migrations import sql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sql("ALTER TABLE runs ADD COLUMN model text CHECK (length(model) BETWEEN 1 AND 200)")


def downgrade() -> None:
    sql("ALTER TABLE runs DROP COLUMN model")
