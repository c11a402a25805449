"""agentplane: a PostgreSQL-native control plane for multi-agent LLM systems.

`agentplane.tool` registers a tool of your own (see agentplane.agents.tools).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "tool"]


def __getattr__(name: str) -> Any:
    # Imported on first use: `import agentplane` (every command) stays cheap.
    if name == "tool":
        from agentplane.agents.tools import tool

        return tool
    raise AttributeError(f"module 'agentplane' has no attribute {name!r}")
