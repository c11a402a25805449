"""Executes a task: the agent state machine, prompt building, LLM and tool calls."""
