"""One interface over every model vendor; `adapter_for` picks the class by provider type."""

from __future__ import annotations

from agentplane.llm.adapters.anthropic import AnthropicAdapter
from agentplane.llm.adapters.base import Adapter, AdapterConfig
from agentplane.llm.adapters.offline import OfflineAdapter
from agentplane.llm.adapters.openai import OpenAIAdapter

ADAPTERS: dict[str, type[Adapter]] = {
    "offline": OfflineAdapter,
    "openai_compatible": OpenAIAdapter,
    "anthropic": AnthropicAdapter,
}


def adapter_for(config: AdapterConfig) -> Adapter:
    return ADAPTERS[config.type](config)


__all__ = ["ADAPTERS", "Adapter", "AdapterConfig", "adapter_for"]
