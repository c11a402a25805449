"""LLM providers, models and prices, adapters, and the call path with budgets."""
