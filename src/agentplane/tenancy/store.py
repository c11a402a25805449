"""SQL of the tenancy package. Runs on tenant connections: RLS scopes every statement."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.types.json import Jsonb

from agentplane.db.errors import translate_errors
from agentplane.db.pool import Connection

TENANT_COLUMNS = """id, name, slug, plan, token_limit, monthly_token_usage, rate_limit_per_hour,
    settings, is_active, created_at, updated_at"""
MEMBER_COLUMNS = """m.tenant_id, m.user_id, u.email, u.username, u.full_name, m.role,
    m.permissions, m.created_at, m.updated_at"""
INVITATION_COLUMNS = "id, tenant_id, email, role, expires_at, accepted_at, created_at"
PROJECT_COLUMNS = """id, tenant_id, name, slug, description, settings,
    archived_at IS NOT NULL AS archived, archived_at, created_by, created_at, updated_at"""
PROJECT_MEMBER_COLUMNS = "tenant_id, project_id, user_id, role, created_at"


async def _exec(conn: Connection, query: str, params: Any = None) -> Any:
    # Translated here, not only when the transaction ends, so services can catch a
    # Conflict and name the field.
    with translate_errors():
        return await conn.execute(query, params)


async def _one(conn: Connection, query: str, params: Any) -> dict[str, Any] | None:
    cur = await _exec(conn, query, params)
    return await cur.fetchone()


async def _all(conn: Connection, query: str, params: Any = None) -> list[dict[str, Any]]:
    cur = await _exec(conn, query, params)
    return await cur.fetchall()


# --- tenants ---------------------------------------------------------------------------


async def insert_tenant(
    conn: Connection, tenant_id: UUID, name: str, slug: str, fields: dict[str, Any]
) -> dict[str, Any]:
    row = await _one(
        conn,
        f"""INSERT INTO tenants (id, name, slug, plan, rate_limit_per_hour, token_limit)
            VALUES (%s, %s, %s, coalesce(%s, 'free'), %s, %s)
            RETURNING {TENANT_COLUMNS}""",
        [
            tenant_id,
            name,
            slug,
            fields.get("plan"),
            fields.get("rate_limit_per_hour"),
            fields.get("token_limit"),
        ],
    )
    assert row is not None
    return row


async def get_tenant(conn: Connection, tenant_id: UUID) -> dict[str, Any] | None:
    return await _one(
        conn,
        f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = %s AND deleted_at IS NULL",
        [tenant_id],
    )


async def tenant_by_slug(conn: Connection, slug: str) -> dict[str, Any] | None:
    return await _one(conn, "SELECT id FROM tenants WHERE slug = %s AND deleted_at IS NULL", [slug])


async def tenants_by_ref(conn: Connection, slug: str, id_prefix: str | None) -> list[dict]:
    """Live tenants with this slug, else those whose id starts with id_prefix; two at most:
    enough to tell a unique match from an ambiguous one."""
    return await _all(
        conn,
        """SELECT id, slug FROM tenants WHERE deleted_at IS NULL AND slug = %(slug)s
           UNION ALL
           (SELECT id, slug FROM tenants
             WHERE deleted_at IS NULL AND id::text LIKE %(prefix)s || '%%'
               AND NOT EXISTS (SELECT 1 FROM tenants WHERE slug = %(slug)s AND deleted_at IS NULL)
             LIMIT 2)""",
        {"slug": slug, "prefix": id_prefix},
    )


async def tenant_slugs(conn: Connection, limit: int = 20) -> list[str]:
    rows = await _all(
        conn, "SELECT slug FROM tenants WHERE deleted_at IS NULL ORDER BY slug LIMIT %s", [limit]
    )
    return [r["slug"] for r in rows]


async def list_tenants(conn: Connection) -> list[dict[str, Any]]:
    """Every live tenant with its member count (owner connection: across tenants)."""
    return await _all(
        conn,
        f"""SELECT {TENANT_COLUMNS},
                   (SELECT count(*) FROM memberships m WHERE m.tenant_id = t.id) AS members
              FROM tenants t WHERE deleted_at IS NULL ORDER BY slug""",
    )


async def tenant_owner(conn: Connection, tenant_id: UUID) -> UUID | None:
    """The tenant's first owner: whom the command line acts as."""
    row = await _one(
        conn,
        "SELECT user_id FROM memberships WHERE tenant_id = %s AND role = 'owner' "
        "ORDER BY created_at LIMIT 1",
        [tenant_id],
    )
    return row["user_id"] if row else None


async def update_tenant(
    conn: Connection, tenant_id: UUID, changes: dict[str, Any]
) -> dict[str, Any] | None:
    return await _one(
        conn,
        f"""UPDATE tenants SET
               name = coalesce(%(name)s, name),
               plan = coalesce(%(plan)s, plan),
               token_limit = CASE WHEN %(set_limit)s THEN %(token_limit)s ELSE token_limit END,
               rate_limit_per_hour = coalesce(%(rate_limit_per_hour)s, rate_limit_per_hour),
               settings = coalesce(%(settings)s, settings)
             WHERE id = %(id)s AND deleted_at IS NULL
            RETURNING {TENANT_COLUMNS}""",
        {
            "id": tenant_id,
            "name": changes.get("name"),
            "plan": changes.get("plan"),
            "set_limit": "token_limit" in changes,
            "token_limit": changes.get("token_limit"),
            "rate_limit_per_hour": changes.get("rate_limit_per_hour"),
            "settings": Jsonb(changes["settings"]) if changes.get("settings") is not None else None,
        },
    )


async def soft_delete_tenant(conn: Connection, tenant_id: UUID) -> dict[str, Any] | None:
    return await _one(
        conn,
        f"""UPDATE tenants SET deleted_at = now(), is_active = false
             WHERE id = %s AND deleted_at IS NULL RETURNING {TENANT_COLUMNS}""",
        [tenant_id],
    )


# --- users and memberships -------------------------------------------------------------


async def insert_user(
    conn: Connection,
    user_id: UUID,
    email: str,
    username: str,
    password_hash: str | None,
    full_name: str | None,
) -> None:
    # No RETURNING: the new row is invisible (RLS) until its membership exists.
    await _exec(
        conn,
        """INSERT INTO users (id, email, username, password_hash, full_name)
           VALUES (%s, %s, %s, %s, %s)""",
        [user_id, email, username, password_hash, full_name],
    )


async def insert_membership(
    conn: Connection,
    tenant_id: UUID,
    user_id: UUID,
    role: str,
    invited_by: UUID | None,
) -> None:
    await _exec(
        conn,
        "INSERT INTO memberships (tenant_id, user_id, role, invited_by) VALUES (%s, %s, %s, %s)",
        [tenant_id, user_id, role, invited_by],
    )


async def get_member(conn: Connection, user_id: UUID) -> dict[str, Any] | None:
    return await _one(
        conn,
        f"""SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.user_id = %s""",
        [user_id],
    )


async def get_member_for_update(conn: Connection, user_id: UUID) -> dict[str, Any] | None:
    return await _one(
        conn,
        f"""SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id
             WHERE m.user_id = %s FOR UPDATE OF m""",
        [user_id],
    )


async def list_members(conn: Connection) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"""SELECT {MEMBER_COLUMNS} FROM memberships m JOIN users u ON u.id = m.user_id
             ORDER BY m.created_at, u.email""",
    )


async def update_member(
    conn: Connection, user_id: UUID, role: str | None, permissions: list[str] | None
) -> None:
    await _exec(
        conn,
        """UPDATE memberships SET role = coalesce(%s, role),
                                  permissions = coalesce(%s, permissions)
            WHERE user_id = %s""",
        [role, permissions, user_id],
    )


async def delete_member(conn: Connection, user_id: UUID) -> None:
    await _exec(conn, "DELETE FROM memberships WHERE user_id = %s", [user_id])


async def lock_owners(conn: Connection) -> int:
    """The tenant's owners, locked: two concurrent demotions cannot leave it ownerless."""
    rows = await _all(conn, "SELECT user_id FROM memberships WHERE role = 'owner' FOR UPDATE")
    return len(rows)


# --- invitations -----------------------------------------------------------------------


async def insert_invitation(
    conn: Connection,
    tenant_id: UUID,
    email: str,
    role: str,
    token_hash: bytes,
    invited_by: UUID | None,
    ttl_seconds: int,
) -> dict[str, Any]:
    row = await _one(
        conn,
        f"""INSERT INTO invitations (tenant_id, email, role, token_hash, invited_by, expires_at)
            VALUES (%s, %s, %s, %s, %s, now() + make_interval(secs => %s))
            RETURNING {INVITATION_COLUMNS}""",
        [tenant_id, email, role, token_hash, invited_by, ttl_seconds],
    )
    assert row is not None
    return row


async def list_invitations(conn: Connection) -> list[dict[str, Any]]:
    return await _all(
        conn, f"SELECT {INVITATION_COLUMNS} FROM invitations ORDER BY created_at DESC"
    )


async def delete_invitation(conn: Connection, invitation_id: UUID) -> bool:
    cur = await _exec(
        conn, "DELETE FROM invitations WHERE id = %s AND accepted_at IS NULL", [invitation_id]
    )
    return cur.rowcount == 1


async def take_invitation(conn: Connection, token_hash: bytes) -> dict[str, Any] | None:
    """The open invitation with this token, locked for acceptance."""
    return await _one(
        conn,
        f"""SELECT {INVITATION_COLUMNS} FROM invitations
             WHERE token_hash = %s AND accepted_at IS NULL AND expires_at > now()
             FOR UPDATE""",
        [token_hash],
    )


async def accept_invitation(conn: Connection, invitation_id: UUID, user_id: UUID) -> None:
    await _exec(
        conn,
        "UPDATE invitations SET accepted_at = now(), accepted_by = %s WHERE id = %s",
        [user_id, invitation_id],
    )


# --- projects --------------------------------------------------------------------------


async def insert_project(
    conn: Connection,
    tenant_id: UUID,
    name: str,
    slug: str,
    description: str | None,
    settings: dict[str, Any],
    created_by: UUID | None,
) -> dict[str, Any]:
    row = await _one(
        conn,
        f"""INSERT INTO projects (tenant_id, name, slug, description, settings, created_by)
            VALUES (%s, %s, %s, %s, %s, %s) RETURNING {PROJECT_COLUMNS}""",
        [tenant_id, name, slug, description, Jsonb(settings), created_by],
    )
    assert row is not None
    return row


async def list_projects(conn: Connection, include_archived: bool) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"""SELECT {PROJECT_COLUMNS} FROM projects
             WHERE %s OR archived_at IS NULL ORDER BY created_at, slug""",
        [include_archived],
    )


async def get_project(conn: Connection, project_id: UUID) -> dict[str, Any] | None:
    return await _one(conn, f"SELECT {PROJECT_COLUMNS} FROM projects WHERE id = %s", [project_id])


async def project_id_of(conn: Connection, ref: str) -> UUID | None:
    """The id of the tenant's project whose id or slug `ref` is."""
    cur = await conn.execute(
        "SELECT id FROM projects WHERE id::text = %(ref)s OR slug = %(ref)s LIMIT 1",
        {"ref": ref.strip().lower()}, prepare=True,
    )
    row = await cur.fetchone()
    return row["id"] if row else None


async def update_project(
    conn: Connection, project_id: UUID, changes: dict[str, Any]
) -> dict[str, Any] | None:
    archived = changes.get("archived")
    return await _one(
        conn,
        f"""UPDATE projects SET
               name = coalesce(%(name)s, name),
               description = CASE WHEN %(set_description)s THEN %(description)s
                                  ELSE description END,
               settings = coalesce(%(settings)s, settings),
               archived_at = CASE WHEN %(archived)s::boolean IS NULL THEN archived_at
                                  WHEN %(archived)s THEN coalesce(archived_at, now())
                                  ELSE NULL END
             WHERE id = %(id)s RETURNING {PROJECT_COLUMNS}""",
        {
            "id": project_id,
            "name": changes.get("name"),
            "set_description": "description" in changes,
            "description": changes.get("description"),
            "settings": Jsonb(changes["settings"]) if changes.get("settings") is not None else None,
            "archived": archived,
        },
    )


async def delete_project(conn: Connection, project_id: UUID) -> bool:
    cur = await _exec(conn, "DELETE FROM projects WHERE id = %s", [project_id])
    return cur.rowcount == 1


async def list_project_members(conn: Connection, project_id: UUID) -> list[dict[str, Any]]:
    return await _all(
        conn,
        f"""SELECT {PROJECT_MEMBER_COLUMNS} FROM project_members
             WHERE project_id = %s ORDER BY created_at""",
        [project_id],
    )


async def upsert_project_member(
    conn: Connection,
    tenant_id: UUID,
    project_id: UUID,
    user_id: UUID,
    role: str,
    added_by: UUID | None,
) -> dict[str, Any]:
    row = await _one(
        conn,
        f"""INSERT INTO project_members (tenant_id, project_id, user_id, role, added_by)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (tenant_id, project_id, user_id) DO UPDATE SET role = EXCLUDED.role
            RETURNING {PROJECT_MEMBER_COLUMNS}""",
        [tenant_id, project_id, user_id, role, added_by],
    )
    assert row is not None
    return row


async def delete_project_member(conn: Connection, project_id: UUID, user_id: UUID) -> bool:
    cur = await _exec(
        conn,
        "DELETE FROM project_members WHERE project_id = %s AND user_id = %s",
        [project_id, user_id],
    )
    return cur.rowcount == 1


def has_tenants_sync(conn: Any) -> bool:
    """For `agentplane up` (sync, owner connection): does any tenant exist yet?"""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM tenants) AS any").fetchone()
    return bool(row[0])
