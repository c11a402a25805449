"""A tenant's monthly token limit is opt-in (NULL: no limit); higher default rate limits.

New tenants used to get a 10,000-token limit that the free offline provider's calls
consumed, so a new team ran out on its third run; and 1,000 requests an hour, which a
dashboard refreshing every 2 s spends in 30 minutes. Existing rows keep their limits.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

import importlib
import re

from agentplane.db.migrations import package_sql, sql

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LIMITED = "<= token_limit;"


def _function(module: str, source: str, name: str) -> str:
    text = getattr(importlib.import_module(f"agentplane.db.migrations.versions.{module}"), source)
    found = re.search(rf"CREATE FUNCTION {name}\(.*?\nEND \$\$;", text, re.S)
    assert found is not None and LIMITED in found.group(0), name
    return found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def _reserving() -> list[str]:
    """llm_reserve and llm_reserve_many as revisions 0005 and 0010 made them."""
    return [
        _function("0005_llm", "BUDGET_FUNCTIONS", "llm_reserve"),
        _function("0010_fewer_row_versions", "UPGRADE", "llm_reserve_many"),
    ]


def upgrade() -> None:
    sql(
        "ALTER TABLE tenants ALTER COLUMN token_limit DROP NOT NULL, "
        "ALTER COLUMN token_limit DROP DEFAULT, ALTER COLUMN rate_limit_per_hour SET DEFAULT 100000"
    )
    sql("ALTER TABLE api_keys ALTER COLUMN rate_limit_per_hour SET DEFAULT 10000")
    sql(package_sql("usage", "budgets.sql"))


def downgrade() -> None:
    for definition in _reserving():
        sql(definition)
    sql("UPDATE tenants SET token_limit = 10000 WHERE token_limit IS NULL")
    sql(
        "ALTER TABLE tenants ALTER COLUMN token_limit SET DEFAULT 10000, "
        "ALTER COLUMN token_limit SET NOT NULL, ALTER COLUMN rate_limit_per_hour SET DEFAULT 1000"
    )
    sql("ALTER TABLE api_keys ALTER COLUMN rate_limit_per_hour SET DEFAULT 1000")
