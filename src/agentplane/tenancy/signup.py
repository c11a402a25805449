"""Signing up: a new tenant with the caller as its owner, or joining a tenant with an
invitation; either way the caller leaves signed in.

Sign-up makes tenancy's rows (the tenant, the user, the membership), then opens a login
session with auth's building blocks: tenancy builds on auth, never the other way.
"""

from __future__ import annotations

import re
import secrets as stdlib_secrets
import uuid

from agentplane.auth import login as auth_login
from agentplane.auth import passwords, secrets
from agentplane.auth import store as auth_store
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import TokensOut
from agentplane.db.pool import Database
from agentplane.errors import Forbidden, NotFound
from agentplane.tenancy import members, tenants, users
from agentplane.tenancy.models import RegisterIn
from agentplane.tenancy.users import NewUser


def _slugify(text: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "tenant"
    return f"{base}-{stdlib_secrets.token_hex(3)}"


def check_registration(mode: str, body: RegisterIn) -> None:
    """Refuse a registration over HTTP that AGENTPLANE_REGISTRATION does not allow.

    Checked before anything is read or written; `register` itself stays available to
    administrators' tools (the CLI), which this setting does not govern.
    """
    if mode == "closed":
        raise Forbidden(
            "registration is closed on this server (AGENTPLANE_REGISTRATION=closed): "
            "an administrator creates users with `agentplane user create` (or a tenant with "
            "`agentplane tenant create`), or sets AGENTPLANE_REGISTRATION to invite or open"
        )
    if mode == "invite" and body.invitation is None:
        raise Forbidden(
            "registration on this server is by invitation only "
            "(AGENTPLANE_REGISTRATION=invite): register with the `invitation` token a "
            "tenant's administrator sends you; new tenants are made with "
            "`agentplane tenant create`, or by setting AGENTPLANE_REGISTRATION=open"
        )


async def register(db: Database, body: RegisterIn, origin: Origin = NOWHERE) -> TokensOut:
    """A new tenant with the caller as owner, or (with an invitation) joining a tenant."""
    user = NewUser(body.email, body.password, body.full_name, body.username)
    passwords.check_policy(body.password, email=body.email, username=body.username or "")
    if body.invitation is not None:
        return await join(db, body.invitation, user, origin, body.totp)
    name = body.tenant_name or body.email.split("@")[0]
    slug = body.tenant_slug or _slugify(name)
    tenant_id = uuid.uuid4()
    async with db.tenant_connection(tenant_id) as conn:
        _, user_id = await tenants.create_tenant_in(
            conn, tenant_id, name=name, slug=slug, owner=user, origin=origin
        )
        tokens = await auth_login.sign_in(db.settings, conn, tenant_id, user_id, origin)
    return tokens


async def join(
    db: Database, token: str, user: NewUser, origin: Origin, code: str | None
) -> TokensOut:
    """Join the invitation's tenant: a new account, or an existing one proving it is its
    own (password, and the one-time code if it has two-factor sign-in)."""
    async with db.app_connection() as conn:
        tenant_id = await auth_store.invitation_tenant(conn, secrets.digest(token))
        existing = await users.find_user_id(conn, user.email)
    if tenant_id is None:
        raise NotFound("invitation not found, expired or already used")
    signin = None
    if existing is not None:
        # An existing account joins by proving it is theirs.
        assert user.password is not None
        signin = await auth_login.check_password(db, user.email, user.password, origin, code)
    async with db.tenant_connection(tenant_id) as conn:
        user_id, _ = await members.accept_invitation(conn, token, existing, user, origin)
        if signin is not None:
            await auth_login.spend_code(conn, signin)
        tokens = await auth_login.start_session(db.settings, conn, tenant_id, user_id, origin)
    return tokens
