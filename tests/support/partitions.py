"""The months before this one for the tests that date records in the past: migrations
and maintenance make only the coming months' partitions."""

from __future__ import annotations

import pytest

from agentplane.db.pool import Database


@pytest.fixture(scope="module", autouse=True)
async def past_partitions(db: Database) -> None:
    """Months back for the records these tests date in the past (only months ahead exist)."""
    async with db.admin_connection() as conn:
        await conn.execute(
            "SELECT usage_records_create_partition(now() - make_interval(months => m)) "
            "FROM generate_series(1, 3) AS m"
        )
