"""Users as tenancy makes them (a new user, or an existing one found by email), and what
the tenancy modules share: a taken slug as a Conflict, values for the audit log."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from agentplane.auth import passwords, secrets
from agentplane.auth import store as auth_store
from agentplane.db.pool import Connection
from agentplane.errors import Conflict
from agentplane.tenancy import store


@dataclass(frozen=True)
class NewUser:
    email: str
    password: str | None = None
    """None: the user signs in with API keys only (until a password is set)."""
    full_name: str | None = None
    username: str | None = None


def conflict_on(field: str, _: Conflict) -> Conflict:
    return Conflict(f"{field} already exists", errors=[{"field": field, "message": "taken"}])


async def insert_new_user(conn: Connection, user: NewUser) -> UUID:
    email = user.email.strip().lower()
    username = (user.username or email).strip().lower()
    password_hash = None
    if user.password is not None:
        passwords.check_policy(user.password, email=email, username=username)
        password_hash = await passwords.hash_password(user.password)
    user_id = uuid.uuid4()
    try:
        await store.insert_user(conn, user_id, email, username, password_hash, user.full_name)
    except Conflict as exc:
        raise conflict_on("username" if "username" in exc.detail else "email", exc) from None
    return user_id


async def find_user_id(conn: Connection, email: str) -> UUID | None:
    row = await auth_store.login_lookup(conn, email.strip().lower(), secrets.email_digest(email))
    return row["user_id"]


def audit_value(value: Any) -> Any:
    """A value as an audit entry's JSON keeps it (ids and dates as text)."""
    return value if isinstance(value, str | int | float | bool | dict | list | None) else str(value)
