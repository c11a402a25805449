"""Two-factor sign-in (TOTP): set up, turned on with a code from the pending secret, turned
off with the password and a code."""

from __future__ import annotations

from typing import Any

from agentplane import crypto
from agentplane.auth import audit, passwords, store, totp
from agentplane.auth.audit import NOWHERE, Origin
from agentplane.auth.models import Identity
from agentplane.db.pool import Database
from agentplane.errors import (
    Conflict,
    Forbidden,
    Unauthorized,
    ValidationFailed,
)


async def _reauthenticate(db: Database, identity: Identity, password: str) -> dict[str, Any]:
    """The signed-in user's MFA state, once the password proves it is them at the keyboard."""
    principal = identity.principal
    if identity.session_id is None or principal.user_id is None:
        raise Forbidden("two-factor settings change only from a signed-in session, not an API key")
    async with db.tenant_connection(principal.tenant_id) as conn:
        state = await store.mfa_state(conn, principal.user_id)
    if not await passwords.verify_password(state["password_hash"], password):
        raise Unauthorized("the password is wrong")
    return state


async def mfa_setup(
    db: Database, identity: Identity, password: str, origin: Origin = NOWHERE
) -> dict[str, str]:
    """A new TOTP secret, pending until `mfa_enable` sees a code made from it."""
    state = await _reauthenticate(db, identity, password)
    if state["mfa_enabled"]:
        raise Conflict("two-factor sign-in is on already; turn it off first to change the secret")
    principal = identity.principal
    assert principal.user_id is not None
    secret = totp.new_secret()
    sealed = crypto.encrypt(db.settings, secret, totp.secret_context(principal.user_id))
    async with db.tenant_connection(principal.tenant_id) as conn:
        await store.set_mfa(conn, principal.user_id, enabled=False, secret=sealed, step=None)
    return {"secret": secret, "otpauth_uri": totp.uri(secret, state["email"])}


async def mfa_enable(db: Database, identity: Identity, code: str, origin: Origin = NOWHERE) -> None:
    principal = identity.principal
    if identity.session_id is None or principal.user_id is None:
        raise Forbidden("two-factor settings change only from a signed-in session, not an API key")
    async with db.tenant_connection(principal.tenant_id) as conn:
        state = await store.mfa_state(conn, principal.user_id)
        if state["mfa_enabled"]:
            raise Conflict("two-factor sign-in is on already")
        if state["mfa_secret"] is None:
            raise Conflict("no pending secret: call /v1/auth/mfa/setup first")
        context = totp.secret_context(principal.user_id)
        secret = crypto.decrypt(db.settings, state["mfa_secret"], context)
        step = totp.matching_step(secret, code)
        if step is None:
            raise ValidationFailed(
                "the code does not match the secret (check the device's clock)",
                errors=[{"field": "code", "message": "does not match"}],
            )
        await store.set_mfa(
            conn, principal.user_id, enabled=True, secret=state["mfa_secret"], step=step
        )
        await audit.record(
            conn,
            principal.tenant_id,
            "mfa_enabled",
            actor=principal,
            resource_type="user",
            resource_id=principal.user_id,
            origin=origin,
        )


async def mfa_disable(
    db: Database, identity: Identity, password: str, code: str, origin: Origin = NOWHERE
) -> None:
    state = await _reauthenticate(db, identity, password)
    principal = identity.principal
    assert principal.user_id is not None
    if not state["mfa_enabled"]:
        raise Conflict("two-factor sign-in is off already")
    context = totp.secret_context(principal.user_id)
    secret = crypto.decrypt(db.settings, state["mfa_secret"], context)
    if totp.matching_step(secret, code) is None:
        raise Unauthorized("invalid one-time code")
    async with db.tenant_connection(principal.tenant_id) as conn:
        await store.set_mfa(conn, principal.user_id, enabled=False, secret=None, step=None)
        await audit.record(
            conn,
            principal.tenant_id,
            "mfa_disabled",
            actor=principal,
            resource_type="user",
            resource_id=principal.user_id,
            origin=origin,
        )
