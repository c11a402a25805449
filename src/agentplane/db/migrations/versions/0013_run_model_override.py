"""A run may name the model its tasks use (`agentplane run --model provider/model`).

NULL: each task uses its agent's model, as before. Another branch may also add a
revision after 0012; whichever merges second renumbers.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-09
"""

from agentplane.db.migrations import sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sql("ALTER TABLE runs ADD COLUMN model text CHECK (length(model) BETWEEN 1 AND 200)")


def downgrade() -> None:
    sql("ALTER TABLE runs DROP COLUMN model")
