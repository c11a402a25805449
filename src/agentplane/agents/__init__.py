"""Agents (definitions: role, model, instructions, tools) and agent instances."""
