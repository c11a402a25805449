"""Errors of model providers, as agentplane errors (never carrying the provider's key)."""

from __future__ import annotations

from agentplane.errors import AgentplaneError


class ProviderError(AgentplaneError):
    status, type, title = 502, "provider-error", "LLM provider error"


class ProviderTimeout(ProviderError):
    status, type, title = 504, "provider-timeout", "LLM provider timeout"
