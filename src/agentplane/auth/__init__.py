"""Authentication: passwords, API keys, JWT access tokens and login sessions, scopes,
rate limits, lockout and the audit log; and the dependencies every router authenticates
with (auth.deps). Tenancy builds on it (users' passwords, invitation tokens, roles):
auth imports no other domain package."""
