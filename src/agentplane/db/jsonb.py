"""JSON to and from the database, with orjson: the runtime sends each batch of rows as one
document and reads contexts back as JSON, and the standard library's encoder and decoder
cost about ten times as much CPU. A value orjson refuses (an integer beyond 64 bits, a
float out of range) goes through the standard library, which takes it as before."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson
from psycopg.types import json as pg_json

_OPTIONS = orjson.OPT_NON_STR_KEYS  # as json.dumps, which writes keys such as 1 as "1"


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: a float would round it
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any) -> bytes:
    """UUIDs and times as strings (orjson's own), Decimals as strings."""
    try:
        return orjson.dumps(value, default=_default, option=_OPTIONS)
    except TypeError:
        return json.dumps(value, default=_default).encode()


def loads(data: str | bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def use() -> None:
    """Make these psycopg's JSON functions for json and jsonb, parameters and results."""
    pg_json.set_json_dumps(dumps)
    pg_json.set_json_loads(loads)
