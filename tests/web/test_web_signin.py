"""Signing in to the dashboard: the form, the session cookie, CSRF, wrong passwords
and codes (the API's lockout), a tampered cookie, signing out, switching tenants."""

from __future__ import annotations

import re

from agentplane.auth import secrets, totp
from tests.web.helpers import PASSWORD, browser, csrf_of, person, post_login, sign_in


async def test_a_page_without_a_session_goes_to_the_sign_in_form(app) -> None:
    async with browser(app) as c:
        r = await c.get("/runs?status=failed")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/runs%3Fstatus%3Dfailed"
        form = await c.get("/login")
        assert form.status_code == 200 and 'name="password"' in form.text
        csp = form.headers["content-security-policy"]
        assert "script-src 'self';" in csp and "unsafe-inline" not in csp
        assert "<script>" not in form.text and " style=" not in form.text


async def test_sign_in_sets_a_secure_session_cookie_and_shows_the_overview(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        r = await post_login(c, owner.email, owner.password)
        assert r.status_code == 303 and r.headers["location"] == "/"
        cookie = next(h for h in r.headers.get_list("set-cookie")
                      if h.startswith("agentplane_session="))
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=lax" in cookie
        home = await c.get("/")
        assert home.status_code == 200
        assert "Overview" in home.text and owner.email in home.text
        assert re.search(r'<meta name="csrf-token" content="[^"]{20,}">', home.text)


async def test_a_wrong_password_changes_nothing_and_locks_out_like_the_api(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        for _ in range(5):
            r = await post_login(c, owner.email, "not the password at all")
            assert r.status_code == 401 and "invalid email or password" in r.text
            assert "agentplane_session" not in r.headers.get("set-cookie", "")
        r = await post_login(c, owner.email, owner.password)  # locked now, even when right
        assert r.status_code == 429 and "too many failed sign-ins" in r.text
        assert int(r.headers["retry-after"]) > 0
        # The API refuses it too: one lockout.
        api = await c.post("/v1/auth/login", json={"email": owner.email, "password": PASSWORD})
        assert api.status_code == 429


async def test_a_sign_in_without_its_form_token_is_refused(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        r = await c.post("/login", data={"email": owner.email, "password": owner.password})
        assert r.status_code == 403 and "sign-in form has expired" in r.text
        await c.get("/login")
        r = await c.post("/login", data={"csrf": "forged", "email": owner.email,
                                         "password": owner.password})
        assert r.status_code == 403
        assert (await c.get("/")).status_code == 303  # still signed out


async def test_two_factor_sign_in_asks_for_the_code_and_refuses_a_wrong_one(app, db) -> None:
    owner = await person(db)
    login = await app_login(app, owner)
    headers = {"Authorization": f"Bearer {login}"}
    async with browser(app) as c:
        setup = await c.post("/v1/auth/mfa/setup", json={"password": PASSWORD}, headers=headers)
        secret = setup.json()["secret"]
        code = totp.code(secret, totp.step_at())
        assert (await c.post("/v1/auth/mfa/enable", json={"code": code},
                             headers=headers)).status_code == 204
        r = await post_login(c, owner.email, owner.password)
        assert r.status_code == 401 and "one-time code" in r.text
        assert 'name="code"' in r.text and "required" in r.text
        r = await post_login(c, owner.email, owner.password, code="000000")
        assert r.status_code == 401 and "invalid one-time code" in r.text


async def app_login(app, who) -> str:
    async with browser(app) as c:
        r = await c.post("/v1/auth/login", json={"email": who.email, "password": who.password})
        return r.json()["access_token"]


def replace_session(client, value: str) -> None:
    client.cookies.delete("agentplane_session")
    client.cookies.set("agentplane_session", value)


async def test_a_tampered_cookie_is_no_session(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        await sign_in(c, owner)
        value = c.cookies["agentplane_session"]
        head, payload, mac = value.split(".")
        replace_session(c, f"{head}.{payload}.{mac[:-2]}AA")
        r = await c.get("/")
        assert r.status_code == 303 and r.headers["location"] == "/login"
        # Signed with the API's token key, an access token is not a session either.
        replace_session(c, await app_login(app, owner))
        assert (await c.get("/")).status_code == 303


async def test_sign_out_ends_the_login_session(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        token = await sign_in(c, owner)
        kept = c.cookies["agentplane_session"]
        r = await c.post("/logout", data={})
        assert r.status_code == 403  # no token: nothing happens
        assert (await c.get("/")).status_code == 200
        r = await c.post("/logout", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/login?notice=signed-out"
        assert "You are signed out" in (await c.get("/login?notice=signed-out")).text
        # The old cookie, replayed, is worth nothing: its login session is revoked.
        replace_session(c, kept)
        assert (await c.get("/")).status_code == 303


async def test_a_member_of_two_tenants_switches_between_them(app, db) -> None:
    first = await person(db)
    other = await person(db)
    viewer = await person(db, "viewer", tenant=other, email=first.email)
    async with browser(app) as c:
        token = await sign_in(c, first)
        home = await c.get("/")
        assert f'<option value="{other.slug}"' in home.text
        assert f'<span class="tenant">{first.slug}' not in home.text
        r = await c.post("/switch", data={"csrf": token, "tenant": other.slug})
        assert r.status_code == 303
        page = await c.get("/?notice=switched")
        assert "You are now in this tenant" in page.text
        assert f"{viewer.email} · viewer" in page.text
        token = csrf_of(page)
        r = await c.post("/switch", data={"csrf": token, "tenant": "no-such-tenant"})
        assert r.status_code == 403


def test_a_session_cookie_is_signed_with_its_own_key(settings) -> None:
    import uuid

    claims = secrets.AccessClaims(uuid.uuid4(), uuid.uuid4(), uuid.uuid4())
    value = secrets.issue_web_session(settings, claims)
    assert secrets.read_web_session(settings, value) == claims
    assert secrets.read_web_session(settings, value + "x") is None
    assert secrets.read_web_session(settings, secrets.issue_access_token(settings, claims)) is None
