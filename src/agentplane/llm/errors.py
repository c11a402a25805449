"""Errors of model providers, as agentplane errors (never carrying the provider's key)."""

from __future__ import annotations

from agentplane.errors import AgentplaneError


class ProviderError(AgentplaneError):
    status, type, title = 502, "provider-error", "LLM provider error"


class ProviderTimeout(ProviderError):
    status, type, title = 504, "provider-timeout", "LLM provider timeout"


class BudgetUnavailable(AgentplaneError):
    """Fail-closed: the budget could not be verified, so the call is refused."""

    status, type, title = 503, "budget-unavailable", "Budget cannot be verified"
