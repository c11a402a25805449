"""Bad input on the dashboard: a huge filter is a 414 page, a long one the page with the
field's problem; a tampered session cookie sends to the sign-in form (and its POST
changes nothing); an invalid form shows the page with each field's problem and writes
nothing. Never a 500."""

from __future__ import annotations

from tests.api.test_route_guards import all_routes, counts
from tests.web.helpers import browser, person, sign_in

HUGE = "x" * 100_000


async def raw_get(app, path: str, query: str, cookie: str) -> tuple[int, str]:
    """A GET straight to the ASGI app: httpx refuses URLs over 64 KB before sending."""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "GET", "scheme": "https", "path": path, "raw_path": path.encode(),
             "root_path": "", "query_string": query.encode(), "client": ("127.0.0.1", 1),
             "server": ("testserver", 443),
             "headers": [(b"host", b"testserver"), (b"accept", b"text/html"),
                         (b"cookie", cookie.encode())]}
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body.decode()


async def test_a_huge_filter_is_a_414_page_on_every_page(app, db) -> None:
    owner = await person(db)
    pages = [path for method, path in all_routes(dashboard=True)
             if method == "GET" and "{" not in path and path not in ("/login",)]
    assert len(pages) >= 12
    async with browser(app) as c:
        await sign_in(c, owner)
        cookie = f"agentplane_session={c.cookies['agentplane_session']}"
        for path in pages:
            status, text = await raw_get(app, path, f"status={HUGE}", cookie)
            assert status == 414, (path, status)
            assert "414 · Address too long" in text and "shorten the filters" in text, path
            assert HUGE[:1000] not in text, path
        ok, _ = await raw_get(app, "/runs", "status=completed", cookie)
        assert ok == 200, "the raw request is a signed-in one"


async def test_a_long_filter_is_the_page_with_the_fields_problem(app, db) -> None:
    owner = await person(db)
    long = "y" * 300
    async with browser(app) as c:
        await sign_in(c, owner)
        for url, shown in ((f"/runs?workflow={long}", "at most"),
                           (f"/llm-calls?model={long}", "at most 200 characters"),
                           (f"/llm-calls?endpoint={'e' * 100}", "at most 64 characters"),
                           (f"/queue?queue={long}", "at most 100 characters"),
                           (f"/audit?event_type={long}", "at most 64 characters")):
            r = await c.get(url)
            assert r.status_code == 422, url
            assert 'class="field-error"' in r.text and shown in r.text, url
            assert long not in r.text, url  # cut to the field's length, not echoed whole


async def test_a_tampered_cookie_signs_in_again_and_changes_nothing(app, db) -> None:
    owner = await person(db)
    async with browser(app) as c:
        token = await sign_in(c, owner)
        value = c.cookies["agentplane_session"]
        head, payload, mac = value.split(".")
        c.cookies.delete("agentplane_session")
        c.cookies.set("agentplane_session", f"{head}.{payload[:-2]}{payload[-2:][::-1]}.{mac}")
        r = await c.get("/queue?status=pending")
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=/queue%3Fstatus%3Dpending"
        before = await counts(db)
        r = await c.post("/keys", data={"csrf": token, "name": "forged", "scopes": "runs:read"})
        assert r.status_code == 401 and "sign in again" in r.text
        assert await counts(db) == before


async def test_every_invalid_form_shows_its_problem_and_writes_nothing(app, db, ran) -> None:
    t, _ = ran
    async with browser(app) as c:
        token = await sign_in(c, t.owner)
        before = await counts(db)
        for path, data, problem in (
            ("/keys", {"name": "", "scopes": "runs:read"}, 'class="field-error"'),
            ("/keys", {"name": "k", "scopes": "runs:read", "expires_in_days": "-4"},
             "a number of days, 1 to 3650"),
            ("/keys", {"name": "k"}, "choose at least one scope"),
            ("/members/invite", {"email": "nope", "role": "viewer"},
             '<span class="field-error">not a valid email address'),
            ("/members/invite", {"email": "a@example.com", "role": "owner"},
             '<span class="field-error">an invitation&#39;s role is'),
            (f"/members/{t.owner.user_id}/role", {"role": "emperor"}, "a role is one of"),
            ("/workflows/review/runs", {"input.audience": "x"}, 'class="field-error"'),
            ("/queue/pause", {"queue": "bad queue!"}, 'class="field-error"'),
            ("/providers", {"name": "p", "type": "openai_compatible", "base_url": "gopher://x"},
             "http(s) URL"),
            ("/providers/models", {"provider": "offline", "name": "m", "input_per_mtok": "-1",
                                   "output_per_mtok": "1"}, "greater than or equal to 0"),
            ("/providers/aliases", {"name": "a", "deployments": ""}, 'class="field-error"'),
        ):
            r = await c.post(path, data={"csrf": token, **data})
            assert r.status_code == 422, (path, data, r.status_code)
            assert problem in r.text, (path, data)
            assert "<h1>" in r.text and "Something went wrong" not in r.text, path
        assert await counts(db) == before
