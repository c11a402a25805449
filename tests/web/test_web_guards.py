"""Every page of the dashboard checks who is asking: without a session a page sends
to the sign-in form and an action is refused; a viewer's actions, even with the
session's own CSRF token, are refused (403) and change nothing. A page added later is
covered here without being listed."""

from __future__ import annotations

from tests.api.test_route_guards import all_routes, counts, url
from tests.web.helpers import browser, person, sign_in

# Open without a session: the ways in and out.
PUBLIC = {("GET", "/login"), ("POST", "/login")}
# A viewer's own session: signing out, moving to another of its tenants.
OWN_SESSION = {("POST", "/logout"), ("POST", "/switch")}


async def test_every_page_without_a_session_asks_to_sign_in(app, db) -> None:
    routes = [r for r in all_routes(dashboard=True) if r not in PUBLIC]
    assert len(routes) >= 40
    before = await counts(db)
    async with browser(app) as c:
        for method, path in routes:
            r = await c.request(method, url(path))
            if method == "GET":
                assert r.status_code == 303, (method, path, r.status_code)
                assert r.headers["location"].startswith("/login"), (method, path)
            else:
                assert r.status_code == 401, (method, path, r.status_code)
                assert "sign in again" in r.text, (method, path)
    assert await counts(db) == before


async def test_a_viewer_acts_nowhere(app, db) -> None:
    owner = await person(db)
    viewer = await person(db, "viewer", tenant=owner)
    writes = [r for r in all_routes(dashboard=True)
              if r[0] == "POST" and r not in PUBLIC | OWN_SESSION]
    assert len(writes) >= 18
    async with browser(app) as c:
        token = await sign_in(c, viewer)
        before = await counts(db)  # signing in is audited
        for method, path in writes:
            r = await c.request(method, url(path), data={"csrf": token})
            assert r.status_code == 403, (method, path, r.status_code, r.text[:300])
            assert "403 · Not allowed" in r.text, (method, path)
    assert await counts(db) == before
