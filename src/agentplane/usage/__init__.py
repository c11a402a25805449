"""Token usage ledger and budgets."""
