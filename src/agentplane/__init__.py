"""agentplane: a PostgreSQL-native control plane for multi-agent LLM systems."""

__version__ = "0.1.0"
