"""JSON to and from the database (db/jsonb.py): orjson, and the standard library for what
orjson refuses, so that any value JSON can carry goes through as before."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from psycopg.types.json import Jsonb

from agentplane.db.pool import Database


async def roundtrip(db: Database, value: object) -> object:
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT %s::jsonb AS v", [Jsonb(value)])
        return (await cur.fetchone())["v"]


async def test_values_the_runtime_sends(db: Database) -> None:
    ident = uuid.uuid4()
    at = datetime(2026, 11, 24, 12, 30, 1, 500, tzinfo=UTC)
    back = await roundtrip(db, {"id": ident, "at": at, "cost": Decimal("0.10"), 3: "three"})
    assert back == {"id": str(ident), "at": at.isoformat(), "cost": "0.10", "3": "three"}


async def test_what_orjson_refuses_goes_through_the_standard_library(db: Database) -> None:
    huge = 2**70
    assert await roundtrip(db, {"n": huge, "list": [huge, -huge]}) == {
        "n": huge,
        "list": [huge, -huge],
    }
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT '1e400'::jsonb AS v")
        assert (await cur.fetchone())["v"] == 10**400  # the server writes every digit


async def test_a_value_json_cannot_carry_is_an_error(db: Database) -> None:
    with pytest.raises(TypeError, match="object is not JSON serializable"):
        await roundtrip(db, {"x": object()})
