"""Errors of the usage package (an exceeded budget is agentplane.errors.BudgetExceeded,
which the database raises too)."""

from __future__ import annotations

from agentplane.errors import AgentplaneError


class BudgetUnavailable(AgentplaneError):
    """Fail-closed: the budget could not be verified, so the call is refused."""

    status, type, title = 503, "budget-unavailable", "Budget cannot be verified"
