"""SQL of the auth package. Every function takes a connection (or the Database for the
one-round-trip checks) and returns rows as dicts."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from agentplane.db.pool import Connection, Database

KEY_COLUMNS = """id, tenant_id, user_id, name, description, key_prefix, scopes,
    rate_limit_per_hour, llm_rpm, llm_tpm, expires_at, last_used, is_active, revoked_at,
    created_at"""


# --- per-request authentication: one round trip, no transaction block -------------


async def _call_once(db: Database, query: str, params: list[Any]) -> dict[str, Any] | None:
    # Autocommit: the statement is its own transaction, one round trip in all.
    async with db.autocommit_connection() as conn:
        cur = await conn.execute(query, params)
        return await cur.fetchone()


async def api_key_principal(
    db: Database, key_hash: bytes, key_max: int, tenant_max: int
) -> dict[str, Any] | None:
    """The key's principal, plus up to `*_max` requests of allowance (0: none asked)."""
    return await _call_once(
        db, "SELECT * FROM auth_api_key(%s, %s, %s)", [key_hash, key_max, tenant_max]
    )


# --- change notifications for the servers' caches of verified keys ----------------

AUTH_CHANNEL = "agentplane_auth"


async def auth_listener(db: Database) -> psycopg.AsyncConnection[Any]:
    """A dedicated connection LISTENing to auth changes (see auth_notify_change)."""
    conn = await psycopg.AsyncConnection.connect(db.endpoints.app, autocommit=True)
    try:
        await conn.execute(f"LISTEN {AUTH_CHANNEL}")
    except BaseException:
        await conn.close()
        raise
    return conn


async def ping(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SELECT 1")


async def login_session_principal(
    db: Database, session_id: UUID, user_id: UUID, tenant_id: UUID
) -> dict[str, Any] | None:
    return await _call_once(
        db, "SELECT * FROM auth_login_session(%s, %s, %s)", [session_id, user_id, tenant_id]
    )


# --- sign-in (no tenant yet: narrow SECURITY DEFINER functions) --------------------


async def login_lookup(conn: Connection, email: str, email_hash: bytes) -> dict[str, Any]:
    cur = await conn.execute("SELECT * FROM auth_login_lookup(%s, %s)", [email, email_hash])
    row = await cur.fetchone()
    assert row is not None
    return row


async def login_failed(
    conn: Connection,
    email_hash: bytes,
    user_id: UUID | None,
    ip: str | None,
    user_agent: str | None,
    max_failures: int,
    window_seconds: int,
    cooldown_seconds: int,
) -> datetime | None:
    cur = await conn.execute(
        "SELECT auth_login_failed(%s, %s, %s, %s, %s, make_interval(secs => %s),"
        " make_interval(secs => %s)) AS locked_until",
        [email_hash, user_id, ip, user_agent, max_failures, window_seconds, cooldown_seconds],
    )
    row = await cur.fetchone()
    return row["locked_until"] if row else None


async def login_succeeded(conn: Connection, email_hash: bytes) -> None:
    await conn.execute("SELECT auth_login_succeeded(%s)", [email_hash])


async def user_tenants(conn: Connection, user_id: UUID) -> list[dict[str, Any]]:
    cur = await conn.execute("SELECT * FROM auth_user_tenants(%s)", [user_id])
    return await cur.fetchall()


async def refresh_tenant(conn: Connection, token_hash: bytes) -> UUID | None:
    cur = await conn.execute("SELECT auth_refresh_tenant(%s) AS t", [token_hash])
    row = await cur.fetchone()
    return row["t"] if row else None


async def invitation_tenant(conn: Connection, token_hash: bytes) -> UUID | None:
    cur = await conn.execute("SELECT auth_invitation_tenant(%s) AS t", [token_hash])
    row = await cur.fetchone()
    return row["t"] if row else None


async def revoke_user_sessions(conn: Connection, user_id: UUID) -> int:
    cur = await conn.execute("SELECT auth_revoke_user_sessions(%s) AS n", [user_id])
    row = await cur.fetchone()
    return row["n"] if row else 0


# --- login sessions (tenant connection) ---------------------------------------------


async def insert_login_session(
    conn: Connection,
    *,
    tenant_id: UUID,
    user_id: UUID,
    family_id: UUID,
    token_hash: bytes,
    ttl_seconds: int,
    ip: str | None,
    user_agent: str | None,
) -> UUID:
    cur = await conn.execute(
        """INSERT INTO login_sessions
               (tenant_id, user_id, family_id, token_hash, expires_at, ip_address, user_agent)
           VALUES (%s, %s, %s, %s, now() + make_interval(secs => %s), %s, %s)
           RETURNING id""",
        [tenant_id, user_id, family_id, token_hash, ttl_seconds, ip, user_agent],
    )
    row = await cur.fetchone()
    assert row is not None
    return row["id"]


async def login_session_for_update(conn: Connection, token_hash: bytes) -> dict[str, Any] | None:
    cur = await conn.execute(
        """SELECT id, tenant_id, user_id, family_id, rotated_at, revoked_at,
                  expires_at <= now() AS expired
             FROM login_sessions WHERE token_hash = %s FOR UPDATE""",
        [token_hash],
    )
    return await cur.fetchone()


async def mark_rotated(conn: Connection, session_id: UUID) -> None:
    await conn.execute("UPDATE login_sessions SET rotated_at = now() WHERE id = %s", [session_id])


async def revoke_family(conn: Connection, family_id: UUID, reason: str) -> int:
    cur = await conn.execute(
        """UPDATE login_sessions SET revoked_at = now(), revoked_reason = %s
            WHERE family_id = %s AND revoked_at IS NULL""",
        [reason, family_id],
    )
    return cur.rowcount


async def touch_last_login(conn: Connection, user_id: UUID) -> None:
    await conn.execute("UPDATE users SET last_login = now() WHERE id = %s", [user_id])


async def mfa_state(conn: Connection, user_id: UUID) -> dict[str, Any]:
    cur = await conn.execute(
        "SELECT email, password_hash, mfa_enabled, mfa_secret FROM users WHERE id = %s",
        [user_id],
    )
    row = await cur.fetchone()
    assert row is not None  # the caller is signed in as this user
    return row


async def set_mfa(
    conn: Connection, user_id: UUID, *, enabled: bool, secret: bytes | None, step: int | None
) -> None:
    await conn.execute(
        "UPDATE users SET mfa_enabled = %s, mfa_secret = %s, mfa_last_step = %s WHERE id = %s",
        [enabled, secret, step, user_id],
    )


async def spend_mfa_step(conn: Connection, user_id: UUID, step: int) -> bool:
    """Record a used TOTP step; False when it (or a later one) was used already."""
    cur = await conn.execute(
        "UPDATE users SET mfa_last_step = %s"
        " WHERE id = %s AND (mfa_last_step IS NULL OR mfa_last_step < %s) RETURNING id",
        [step, user_id, step],
    )
    return await cur.fetchone() is not None


# --- API keys ------------------------------------------------------------------------


async def insert_api_key(
    conn: Connection,
    *,
    tenant_id: UUID,
    user_id: UUID,
    key_hash: bytes,
    key_prefix: str,
    name: str,
    description: str | None,
    scopes: list[str],
    rate_limit_per_hour: int,
    llm_rpm: int | None,
    llm_tpm: int | None,
    expires_at: datetime | None,
    created_by: UUID | None,
) -> dict[str, Any]:
    cur = await conn.execute(
        f"""INSERT INTO api_keys (tenant_id, user_id, key_hash, key_prefix, name, description,
                                  scopes, rate_limit_per_hour, llm_rpm, llm_tpm, expires_at,
                                  created_by)
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            RETURNING {KEY_COLUMNS}""",
        [
            tenant_id,
            user_id,
            key_hash,
            key_prefix,
            name,
            description,
            scopes,
            rate_limit_per_hour,
            llm_rpm,
            llm_tpm,
            expires_at,
            created_by,
        ],
    )
    row = await cur.fetchone()
    assert row is not None
    return row


async def member_grants(conn: Connection, user_id: UUID) -> dict[str, Any] | None:
    """The role and extra permissions of the user's membership in the connection's tenant."""
    cur = await conn.execute(
        "SELECT role, permissions FROM memberships WHERE user_id = %s", [user_id]
    )
    return await cur.fetchone()


async def list_api_keys(conn: Connection, *, include_revoked: bool) -> list[dict[str, Any]]:
    cur = await conn.execute(
        f"SELECT {KEY_COLUMNS} FROM api_keys WHERE %s OR is_active ORDER BY created_at DESC",
        [include_revoked],
    )
    return await cur.fetchall()


async def get_api_key(conn: Connection, key_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE id = %s", [key_id])
    return await cur.fetchone()


async def revoke_api_key(conn: Connection, key_id: UUID) -> dict[str, Any] | None:
    cur = await conn.execute(
        f"""UPDATE api_keys SET is_active = false, revoked_at = now()
             WHERE id = %s AND is_active RETURNING {KEY_COLUMNS}""",
        [key_id],
    )
    return await cur.fetchone()


# --- audit log -------------------------------------------------------------------------


async def insert_audit(
    conn: Connection,
    *,
    tenant_id: UUID,
    event_type: str,
    user_id: UUID | None,
    api_key_id: UUID | None,
    resource_type: str | None,
    resource_id: str | None,
    old_values: Any,
    new_values: Any,
    details: dict[str, Any],
    ip: str | None,
    user_agent: str | None,
) -> None:
    await conn.execute(
        """INSERT INTO audit_logs (tenant_id, event_type, user_id, api_key_id, resource_type,
                                   resource_id, old_values, new_values, details, ip_address,
                                   user_agent)
           VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
        [
            tenant_id,
            event_type,
            user_id,
            api_key_id,
            resource_type,
            resource_id,
            None if old_values is None else Jsonb(old_values),
            None if new_values is None else Jsonb(new_values),
            Jsonb(details),
            ip,
            user_agent,
        ],
    )


async def query_audit(
    conn: Connection,
    *,
    event_type: str | None,
    user_id: UUID | None,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    until: datetime | None,
    after: tuple[datetime, UUID] | None,
    limit: int,
) -> list[dict[str, Any]]:
    # Newest first; the cursor is the (created_at, id) of the last row of the previous page.
    cur = await conn.execute(
        """SELECT id, tenant_id, event_type, user_id, api_key_id, resource_type, resource_id,
                  old_values, new_values, details, host(ip_address) AS ip_address,
                  user_agent, created_at
             FROM audit_logs
            WHERE (%(event_type)s::text IS NULL OR event_type = %(event_type)s)
              AND (%(user_id)s::uuid IS NULL OR user_id = %(user_id)s)
              AND (%(resource_type)s::text IS NULL OR resource_type = %(resource_type)s)
              AND (%(resource_id)s::text IS NULL OR resource_id = %(resource_id)s)
              AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
              AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
              AND (%(after_ts)s::timestamptz IS NULL
                   OR (created_at, id) < (%(after_ts)s, %(after_id)s::uuid))
            ORDER BY created_at DESC, id DESC
            LIMIT %(limit)s""",
        {
            "event_type": event_type,
            "user_id": user_id,
            "resource_type": resource_type,
            "resource_id": resource_id,
            "since": since,
            "until": until,
            "after_ts": after[0] if after else None,
            "after_id": after[1] if after else None,
            "limit": limit,
        },
    )
    return await cur.fetchall()
