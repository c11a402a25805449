"""Scopes and roles: what a principal may do.

A scope is `<resource>:<action>`. A role grants a fixed set of scopes; a membership
may add extra scopes (its `permissions`). An API key carries its own scopes, and at
every request they are intersected with what its owner's membership grants *now*,
so a key never grants more than its owner has (even after a demotion).

| scope | allows |
|---|---|
| workflows:read / workflows:write | read / create and change workflows |
| agents:read / agents:write | read / define and change agents |
| agents:execute | run agents |
| runs:read / runs:write | read / start, cancel and answer runs |
| jobs:read / jobs:write | read / enqueue and manage queue jobs |
| events:read | read and stream the event log |
| usage:read | read usage records, budgets and reports |
| llm:read / llm:write | read / configure providers, models and aliases |
| llm:invoke | call models through the gateway (/v1/chat/completions, /v1/messages, ...) |
| sessions:read / sessions:write | read / manage sessions (conversation contexts) |
| messages:read / messages:write | read / send, receive, ack and requeue agent-to-agent messages |
| projects:read / projects:write | read / create, change and archive projects |
| tenant:manage | change the tenant's name, plan, limits and settings |
| keys:manage | create, list and revoke API keys |
| members:manage | invite members, change their role, remove them |
| audit:read | query the audit log |

Roles: viewer (every `:read` scope but audit), developer (viewer plus every write and
execute scope), admin (developer plus keys, members, audit and tenant management),
owner (everything; only owners make or unmake owners and delete the tenant).
"""

from __future__ import annotations

from typing import Final

READ: Final = (
    "workflows:read",
    "agents:read",
    "runs:read",
    "jobs:read",
    "events:read",
    "usage:read",
    "llm:read",
    "sessions:read",
    "projects:read",
    "messages:read",
)
WRITE: Final = (
    "workflows:write",
    "agents:write",
    "agents:execute",
    "runs:write",
    "jobs:write",
    "llm:write",
    "llm:invoke",
    "sessions:write",
    "projects:write",
    "messages:write",
)
MANAGE: Final = ("tenant:manage", "keys:manage", "members:manage", "audit:read")

ALL_SCOPES: Final[frozenset[str]] = frozenset(READ + WRITE + MANAGE)
# Enough to run workflows and queries and read what they did: their runs, events, the
# agents they use and the usage they made. Managing anything is asked for by name.
DEFAULT_KEY_SCOPES: Final[tuple[str, ...]] = (
    "agents:read",
    "agents:execute",
    "workflows:read",
    "workflows:write",
    "runs:read",
    "runs:write",
    "events:read",
    "usage:read",
)

ROLES: Final = ("owner", "admin", "developer", "viewer")
ROLE_SCOPES: Final[dict[str, frozenset[str]]] = {
    "viewer": frozenset(READ),
    "developer": frozenset(READ + WRITE),
    "admin": frozenset(READ + WRITE + MANAGE),
    "owner": frozenset(READ + WRITE + MANAGE),
}
MANAGERS: Final[frozenset[str]] = frozenset({"owner", "admin"})


def granted(role: str, permissions: list[str] | tuple[str, ...] | None = None) -> frozenset[str]:
    """What a membership grants: its role's scopes plus its extra permissions."""
    extra = frozenset(permissions or ()) & ALL_SCOPES
    return ROLE_SCOPES.get(role, frozenset()) | extra


def unknown(scopes: list[str] | tuple[str, ...] | set[str]) -> list[str]:
    return sorted(set(scopes) - ALL_SCOPES)
