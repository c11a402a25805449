"""Two-factor sign-in with TOTP: setup, enable, sign-in with a code, replay, disable."""

from __future__ import annotations

import base64

import httpx
import pytest

from agentplane.auth import totp
from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.auth.test_auth_api import PASSWORD, audit_events, bearer, register
from tests.conftest import make_settings, make_tenant

EMAIL = "mfa@example.com"


@pytest.fixture(scope="module")
def settings(pg_home, pg_port, database_name) -> Settings:
    # This module signs up over HTTP, which env=test leaves closed by default.
    return make_settings(pg_home, pg_port, database_name, registration="open")


def test_codes_match_the_rfc_6238_vectors() -> None:
    # RFC 6238 appendix B, SHA-1 key "12345678901234567890", 8 digits cut to our 6.
    secret = base64.b32encode(b"12345678901234567890").decode()
    assert totp.code(secret, 59 // 30) == "287082"
    assert totp.code(secret, 1111111109 // 30) == "081804"
    assert totp.code(secret, 2000000000 // 30) == "279037"
    assert totp.matching_step(secret, "287082", when=59) == 1
    assert totp.matching_step(secret, "287082", when=59 + 30) == 1  # one step of drift
    assert totp.matching_step(secret, "287082", when=59 + 90) is None
    assert totp.matching_step(secret, "28708", when=59) is None


async def login(client: httpx.AsyncClient, **extra: str) -> httpx.Response:
    return await client.post("/v1/auth/login", json={"email": EMAIL, "password": PASSWORD, **extra})


async def test_two_factor_sign_in(client: httpx.AsyncClient, db: Database) -> None:
    tokens = await register(client, EMAIL, tenant_slug="mfa-org")
    me = bearer(tokens["access_token"])

    r = await client.post("/v1/auth/mfa/setup", headers=me, json={"password": "not the password"})
    assert r.status_code == 401, r.text
    r = await client.post("/v1/auth/mfa/enable", headers=me, json={"code": "123456"})
    assert r.status_code == 409, r.text  # nothing pending yet

    r = await client.post("/v1/auth/mfa/setup", headers=me, json={"password": PASSWORD})
    assert r.status_code == 200, r.text
    secret = r.json()["secret"]
    assert r.json()["otpauth_uri"].startswith("otpauth://totp/agentplane%3Amfa%40example.com?")
    async with db.admin_connection() as conn:
        cur = await conn.execute("SELECT mfa_secret FROM users WHERE email = %s", [EMAIL])
        sealed = bytes((await cur.fetchone())["mfa_secret"])
    assert secret.encode() not in sealed and base64.b32decode(secret) not in sealed

    # Pending only: signing in needs no code yet.
    assert (await login(client)).status_code == 200

    wrong = str((int(totp.code(secret, totp.step_at())) + 1) % 1_000_000).zfill(6)
    r = await client.post("/v1/auth/mfa/enable", headers=me, json={"code": wrong})
    assert r.status_code == 422, r.text
    now = totp.step_at()
    r = await client.post("/v1/auth/mfa/enable", headers=me, json={"code": totp.code(secret, now)})
    assert r.status_code == 204, r.text

    r = await login(client)
    assert r.status_code == 401 and r.json()["mfa_required"] is True
    r = await login(client, totp=wrong)
    assert r.status_code == 401 and r.json()["detail"] == "invalid one-time code"
    # The code that enabled it is spent; so is any code once used.
    r = await login(client, totp=totp.code(secret, now))
    assert r.status_code == 401 and "used already" in r.json()["detail"]
    fresh = totp.code(secret, now + 1)
    r = await login(client, totp=fresh)
    assert r.status_code == 200, r.text
    r = await login(client, totp=fresh)
    assert r.status_code == 401, r.text

    async with db.admin_connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM audit_logs WHERE event_type = %s", ["login_failed"]
        )
        assert (await cur.fetchone())["n"] == 1  # the wrong code counts toward the lockout

    r = await client.post(
        "/v1/auth/mfa/disable", headers=me, json={"password": PASSWORD, "code": wrong}
    )
    assert r.status_code == 401, r.text
    r = await client.post(
        "/v1/auth/mfa/disable",
        headers=me,
        json={"password": PASSWORD, "code": totp.code(secret, totp.step_at())},
    )
    assert r.status_code == 204, r.text
    assert (await login(client)).status_code == 200
    kinds = [e["event_type"] for e in (await audit_events(client, me))["items"]]
    assert "mfa_enabled" in kinds and "mfa_disabled" in kinds


async def test_an_api_key_cannot_change_two_factor_settings(
    client: httpx.AsyncClient, db: Database
) -> None:
    tenant = await make_tenant(db)
    r = await client.post("/v1/auth/mfa/setup", headers=tenant.headers, json={"password": "x" * 12})
    assert r.status_code == 403, r.text
    assert r.headers["content-type"] == "application/problem+json"
