"""One root error for the whole project.

Every error carries its HTTP status and a stable problem type (RFC 9457), so the
API renders any of them the same way and the CLI turns any of them into one line.
"""

from __future__ import annotations

import re
from typing import Any

PROBLEM_BASE = "https://agentplane.dev/problems/"


class AgentplaneError(Exception):
    status: int = 500
    type: str = "internal-error"
    title: str = "Internal error"

    def __init__(
        self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        self.detail = detail or self.title
        self.headers = headers
        self.extra = extra
        super().__init__(self.detail)

    @property
    def type_uri(self) -> str:
        return PROBLEM_BASE + self.type

    def problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": self.type_uri,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            body["instance"] = instance
        body.update(self.extra)
        return body


class BadRequest(AgentplaneError):
    status, type, title = 400, "bad-request", "Bad request"


class ValidationFailed(AgentplaneError):
    status, type, title = 422, "validation-failed", "Validation failed"

    @classmethod
    def listing(cls, problems: list[dict[str, Any]], **extra: Any) -> ValidationFailed:
        """One error for many problems, each {field, value, message} in the `errors`
        member and all of them in the detail (the CLI prints one line each)."""
        detail = "; ".join(f"{p['field']}: {p['message']}" for p in problems)
        return cls(detail, errors=problems, **extra)


class Unauthorized(AgentplaneError):
    status, type, title = 401, "unauthorized", "Authentication required"


class Forbidden(AgentplaneError):
    status, type, title = 403, "forbidden", "Forbidden"


class NotFound(AgentplaneError):
    status, type, title = 404, "not-found", "Not found"


class Conflict(AgentplaneError):
    status, type, title = 409, "conflict", "Conflict"


class PayloadTooLarge(AgentplaneError):
    status, type, title = 413, "payload-too-large", "Payload too large"


class RateLimited(AgentplaneError):
    status, type, title = 429, "rate-limited", "Too many requests"


class LimitReached(RateLimited):
    """A per-minute limit the database refused a call by (usage/sql/rates.sql); its
    message ends with the wait, "retry in N s", which becomes the Retry-After."""

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        wait = re.search(r"retry in (\d+) s$", detail or "")
        super().__init__(detail, headers={"Retry-After": wait[1]} if wait else None, **extra)


class BudgetExceeded(AgentplaneError):
    """A token budget would be exceeded; `budget` names which (session, api_key, tenant)."""

    status, type, title = 402, "budget-exceeded", "Budget exceeded"

    def __init__(
        self, detail: str | None = None, *, budget: str | None = None, **extra: Any
    ) -> None:
        if budget is None and detail:
            budget = detail.split(" ", 1)[0]  # the database names it first: "session token ..."
        super().__init__(detail, budget=budget, **extra)


class ConfigError(AgentplaneError):
    """The settings or the machine are wrong; the operator must act."""

    status, type, title = 500, "config-error", "Configuration error"


class DatabaseUnavailable(AgentplaneError):
    status, type, title = 503, "database-unavailable", "Database unavailable"


class PartitionMissing(AgentplaneError):
    """A row fell in a month whose partition does not exist: the operator's problem (the
    maintenance task makes them ahead), never the client's. `table` names the table."""

    status, type, title = 503, "partition-missing", "Partition missing"


class SchemaMismatch(AgentplaneError):
    """The database schema is not the one this code expects."""

    status, type, title = 503, "schema-mismatch", "Database schema mismatch"
