"""The one place where driver errors become agentplane errors."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from agentplane.errors import (
    AgentplaneError,
    BudgetExceeded,
    Conflict,
    DatabaseUnavailable,
    LimitReached,
    NotFound,
    PartitionMissing,
    ValidationFailed,
)

# Functions raise these SQLSTATEs (RAISE ... USING ERRCODE) to pick the HTTP status.
APP_ERRCODES: dict[str, type[AgentplaneError]] = {
    "AP402": BudgetExceeded,
    "AP404": NotFound,
    "AP409": Conflict,
    "AP422": ValidationFailed,
    "AP429": LimitReached,
}


def describe_connect_error(exc: Exception, where: str) -> str:
    """One line naming the problem and what to do about it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = str(exc).lower()
    if "password authentication failed" in low or "no password supplied" in low:
        user = re.search(r'user "([^"]+)"', str(exc))
        who = f" for user {user.group(1)}" if user else ""
        return f"PostgreSQL at {where} rejected the password{who}; fix the password in {_url_var()}"
    if "does not exist" in low and "database" in low:
        return f"{text} at {where}; create it or fix the database name in {_url_var()}"
    if (
        "connection refused" in low
        or "could not connect" in low
        or "timeout" in low
        or "no such file" in low
        or "name or service not known" in low
    ):
        return (
            f"cannot reach PostgreSQL at {where} ({_reason(low)}); "
            f"check {_url_var()} and that the server is running"
        )
    return f"cannot connect to PostgreSQL at {where}: {text}"


def _reason(low: str) -> str:
    for needle in (
        "connection refused",
        "timeout",
        "no such file or directory",
        "name or service not known",
    ):
        if needle in low:
            return needle
    return "unreachable"


def _url_var() -> str:
    return "AGENTPLANE_DATABASE_URL"


@contextlib.contextmanager
def translate_errors() -> Iterator[None]:
    try:
        yield
    except AgentplaneError:
        raise
    except pg.UniqueViolation as exc:
        fields = constraint_fields(exc)
        raise Conflict(
            _constraint_detail(exc, "already exists"),
            errors=[{"field": f, "message": "taken"} for f in fields],
        ) from None
    except pg.ForeignKeyViolation as exc:
        raise ValidationFailed(
            _constraint_detail(exc, "refers to something that does not exist")
        ) from None
    except pg.CheckViolation as exc:
        missing = NO_PARTITION.match(exc.diag.message_primary or "")
        if missing:
            raise _partition_missing(exc, missing[1]) from None
        raise ValidationFailed(_constraint_detail(exc, "is invalid")) from None
    except (pg.NotNullViolation, psycopg.DataError) as exc:
        raise ValidationFailed(_constraint_detail(exc, "is invalid")) from None
    except pg.InsufficientPrivilege as exc:
        # Row-level security: a row of another tenant is, for this caller, a row that is not there.
        raise NotFound("not found") from exc
    except psycopg.Error as exc:
        code = getattr(exc, "sqlstate", None)
        if code in APP_ERRCODES:
            raise APP_ERRCODES[code](exc.diag.message_primary or str(exc)) from None
        if isinstance(exc, psycopg.OperationalError):
            raise DatabaseUnavailable(f"database error: {str(exc).strip()[:300]}") from None
        raise
    except PoolTimeout:
        raise DatabaseUnavailable("no database connection available in time") from None


NO_PARTITION = re.compile(r'no partition of relation "([^"]+)" found for row')
# "Partition key of the failing row contains (created_at) = (2027-01-31 23:59:58+00)."
# (PostgreSQL leaves the row out where row-level security applies.)
_PARTITION_KEY = re.compile(r"Partition key of the failing row contains \([^)]*\) = \((.+)\)\.?$")


def _partition_missing(exc: psycopg.Error, table: str) -> PartitionMissing:
    key = _PARTITION_KEY.match(exc.diag.message_detail or "")
    return PartitionMissing(
        f"no partition of {table} holds {key[1] if key else 'a row written now'}; "
        "run `agentplane ops partitions` or start a worker (it makes them ahead)",
        headers={"Retry-After": "1"},
        table=table,
        at=key[1] if key else None,
    )


def _constraint_detail(exc: psycopg.Error, what: str) -> str:
    diag = exc.diag
    detail = diag.message_detail or ""
    # "Key (slug)=(acme) already exists." -> name the field, never other rows' data.
    match = re.match(r"Key \(([^)]+)\)", detail)
    if match:
        return f"{match.group(1)} {what}"
    if diag.column_name:
        return f"{diag.column_name} {what}"
    fields = constraint_fields(exc)
    if fields:
        return f"{', '.join(fields)} {what}"
    return diag.message_primary or what


def constraint_fields(exc: psycopg.Error) -> list[str]:
    """The columns a constraint is on, read from its name (`agents_tenant_id_slug_key`:
    slug), for when row-level security keeps the key out of the error's detail. The
    tenant is never one of them: to the caller every row is the tenant's own."""
    diag = exc.diag
    name, table = diag.constraint_name or "", diag.table_name or ""
    match = re.match(rf"{re.escape(table)}_(.+?)_(?:key|pkey|idx|uniq|fkey|check)$", name)
    if not table or not match:
        return []
    cols = match.group(1).removeprefix("tenant_id").strip("_")
    return [cols] if cols else []
