"""API keys, members and invitations, the audit log; and roles: a viewer sees no
action, and its forged POST is refused."""

from __future__ import annotations

import re

import httpx

from tests.web.helpers import browser, csrf_of, person, sign_in


async def test_a_key_is_shown_once_and_revoked_at_once(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        token = await sign_in(c, owner)
        page = await c.get("/keys")
        assert page.status_code == 200 and 'id="create-key"' in page.text
        made = await c.post("/keys", data={"csrf": token, "name": "ci",
                                           "scopes": ["runs:read", "agents:read"]})
        assert made.status_code == 201
        key = re.search(r'id="key-secret">(ap_[^<]+)<', made.text).group(1)
        assert "not shown again" in made.text
        me = await c.get("/me", headers={"Authorization": f"Bearer {key}"})
        assert me.status_code == 200 and me.json()["scopes"] == ["agents:read", "runs:read"]
        listed = await c.get("/keys")
        assert key not in listed.text and key[:8] in listed.text  # the prefix only
        key_id = re.search(r'data-key="([0-9a-f-]+)"><td>ci<', listed.text).group(1)
        r = await c.post(f"/keys/{key_id}/revoke", data={"csrf": token})
        assert r.status_code == 303 and r.headers["location"] == "/keys?notice=key-revoked"
        gone = await c.get("/me", headers={"Authorization": f"Bearer {key}"})
        assert gone.status_code == 401


async def test_a_key_form_with_problems_shows_them_and_makes_nothing(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        token = await sign_in(c, owner)
        r = await c.post("/keys", data={"csrf": token, "name": "", "expires_in_days": "-3"})
        assert r.status_code == 422
        assert "choose at least one scope" in r.text and "a number of days" in r.text
        assert "key-secret" not in r.text
        assert 'data-key="' not in (await c.get("/keys")).text


async def test_members_invitations_and_the_audit_log(app, db) -> None:
    owner = await person(db)
    dev = await person(db, "developer", tenant=owner)
    async with browser(app) as c:
        token = await sign_in(c, owner)
        page = await c.get("/members")
        assert dev.email in page.text and 'id="invite"' in page.text
        r = await c.post("/members/invite", data={"csrf": token, "email": "new@example.com",
                                                  "role": "viewer"})
        assert r.status_code == 201 and re.search(r'id="invitation-token">inv_', r.text)
        bad = await c.post("/members/invite", data={"csrf": token, "email": "nope",
                                                    "role": "viewer"})
        assert bad.status_code == 422 and "not a valid email address" in bad.text
        r = await c.post(f"/members/{dev.user_id}/role", data={"csrf": token, "role": "viewer"})
        assert r.status_code == 303
        assert f"<td>{dev.email}</td><td></td><td>viewer</td>" in (await c.get("/members")).text
        audit = await c.get("/audit")
        assert audit.status_code == 200
        assert ">member_role_changed<" in audit.text or "member" in audit.text
        assert ">login<" in audit.text
        only = await c.get("/audit?event_type=login")
        assert only.status_code == 200 and "invitation" not in only.text.split("<tbody>")[1]
        assert (await c.get("/audit?since=soon")).status_code == 422


async def test_a_viewer_sees_no_action_and_a_forged_post_is_refused(app, db, ran) -> None:
    t, run = ran
    viewer = await person(db, "viewer", tenant=t.owner)
    async with browser(app) as c:
        token = await sign_in(c, viewer)
        run_page = await c.get(f"/runs/{run['id']}")
        assert run_page.status_code == 200
        assert "method=\"post\"" not in run_page.text.split("<main>")[1]
        workflow = await c.get("/workflows/review")
        assert 'id="start-run"' not in workflow.text and "does not start runs" in workflow.text
        home = await c.get("/")
        assert 'href="/keys"' not in home.text and 'href="/audit"' not in home.text
        for path in ("/keys", "/audit"):
            r = await c.get(path)
            assert r.status_code == 403 and "403 · Not allowed" in r.text, path
        # Forged: the viewer's own valid token, an action its role does not allow.
        for path, data in ((f"/runs/{run['id']}/cancel", {}),
                           ("/workflows/review/runs", {"input.change": "x"}),
                           ("/keys", {"name": "x", "scopes": "runs:read"}),
                           ("/members/invite", {"email": "a@example.com", "role": "admin"})):
            r = await c.post(path, data={"csrf": token, **data})
            assert r.status_code == 403, path
        r = await c.post(f"/runs/{run['id']}/cancel", data={"csrf": token},
                         headers={"hx-request": "true"})
        assert r.status_code == 403 and r.headers["hx-retarget"] == "#flash"
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as api:
        after = await api.get(f"/v1/runs/{run['id']}", headers=t.headers)
        assert after.json()["status"] == "completed"  # nothing changed


async def test_every_post_needs_the_sessions_csrf_token(app, db, ran) -> None:
    t, _ = ran
    async with browser(app) as c:
        token = await sign_in(c, t.owner)
        for data, headers in (({}, {}), ({"csrf": "wrong"}, {}),
                              ({}, {"x-csrf-token": "wrong"}),
                              ({"csrf": token[:-1] + ("A" if token[-1] != "A" else "B")}, {})):
            r = await c.post("/keys", data={"name": "x", "scopes": "runs:read", **data},
                             headers=headers)
            assert r.status_code == 403 and "security token" in r.text
        r = await c.post("/keys", data={"name": "by htmx", "scopes": "runs:read"},
                         headers={"x-csrf-token": token})
        assert r.status_code == 201  # the header htmx sends will do
    other = await person(db)
    async with browser(app) as c:
        theirs = await sign_in(c, other)
    async with browser(app) as c:
        await sign_in(c, t.owner)
        r = await c.post("/keys", data={"csrf": theirs, "name": "x", "scopes": "runs:read"})
        assert r.status_code == 403  # another session's token is not this one's
        assert csrf_of(await c.get("/")) != theirs
