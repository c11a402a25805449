"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}
"""

from agentplane.db.migrations import sql

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None

# A change of a function, view, trigger or policy is made in its sql/ file, which the
# revision then applies (sql_files, apply_sql): see agentplane.db.migrations.


def upgrade() -> None:
    sql("""
    """)


def downgrade() -> None:
    sql("""
    """)
