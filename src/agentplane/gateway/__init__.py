"""The OpenAI- and Anthropic-compatible gateway over agentplane.llm."""
