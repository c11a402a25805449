"""Sessions: conversation contexts with a token budget (not login sessions)."""
