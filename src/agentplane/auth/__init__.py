"""Authentication: passwords, API keys, JWT access tokens and login sessions, scopes,
rate limits, lockout and the audit log."""
