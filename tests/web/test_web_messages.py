"""The messages page: the tenant's messages filtered, a message with its copies and their
history, dead messages requeued; roles as in the API, and another tenant's unseen."""

from __future__ import annotations

import uuid

import httpx

from agentplane.auth import keys
from agentplane.auth.models import ApiKeyIn
from tests.messages.helpers import instances, receive, send
from tests.web.helpers import browser, person, sign_in


async def messaging(db, app):
    """An owner with a password, and an API key of theirs that sends and receives."""
    owner = await person(db)
    _, key = await keys.create_key(
        db, owner.tenant_id,
        ApiKeyIn(name="bus", scopes=["agents:read", "agents:write", "messages:read",
                                     "messages:write"],
                 rate_limit_per_hour=1_000_000, user_id=owner.user_id),
        actor=None)
    ctx = type("Ctx", (), {"headers": {"Authorization": f"Bearer {key}"}})()
    return owner, ctx


async def test_messages_are_listed_shown_and_dead_ones_requeued(db, app) -> None:
    owner, ctx = await messaging(db, app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as api:
        (inst,) = await instances(api, ctx, "reviewer")
        await instances(api, ctx, "writer")
        doomed = await send(api, ctx, to={"agent": "reviewer"}, type="review.request",
                            payload={"pr": 42}, correlation_id="pr-42", max_retries=0)
        other = await send(api, ctx, to={"agent": "writer"}, type="draft.ready")
        assert [m["id"] for m in await receive(api, ctx, "reviewer", inst)] == [doomed["id"]]
        r = await api.post(f"/v1/messages/{doomed['id']}/nack", headers=ctx.headers,
                           json={"instance": str(inst), "error": "could not parse the diff"})
        assert r.json() == {"status": "dead"}, r.text
    delivery = doomed["deliveries"][0]["id"]

    async with browser(app) as c:
        token = await sign_in(c, owner)
        r = await c.get("/messages")
        assert r.status_code == 200 and 'href="/messages"' in r.text  # in the menu
        assert f'data-message="{doomed["id"]}"' in r.text
        assert f'data-message="{other["id"]}"' in r.text
        assert f'data-dead-message="{delivery}"' in r.text
        assert f'action="/messages/dead/{delivery}/requeue"' in r.text

        only = await c.get("/messages", params={"agent": "writer"})
        assert f'data-message="{other["id"]}"' in only.text
        assert f'data-message="{doomed["id"]}"' not in only.text
        by_id = await c.get("/messages", params={"correlation_id": "pr-42"})
        assert f'data-message="{doomed["id"]}"' in by_id.text
        assert f'data-message="{other["id"]}"' not in by_id.text
        for params, problem in (({"agent": "ghost"}, "no agent of that slug"),
                                ({"status": "lost"}, "not a delivery status"),
                                ({"type": "t" * 65}, "at most 64 characters")):
            bad = await c.get("/messages", params=params)
            assert bad.status_code == 422 and problem in bad.text, params

        shown = await c.get(f"/messages/{doomed['id']}")
        assert shown.status_code == 200
        assert "review.request" in shown.text and "&#34;pr&#34;: 42" in shown.text
        assert f'data-delivery="{delivery}"' in shown.text
        assert "could not parse the diff" in shown.text  # its history

        requeued = await c.post(f"/messages/dead/{delivery}/requeue", data={"csrf": token})
        assert requeued.status_code == 303
        assert requeued.headers["location"] == f"/messages/{doomed['id']}?notice=message-requeued"
        after = await c.get(requeued.headers["location"])
        assert "The message is due again" in after.text
        assert f'action="/messages/dead/{delivery}/requeue"' not in after.text
        again = await c.post(f"/messages/dead/{delivery}/requeue", data={"csrf": token})
        assert again.status_code == 409
        forged = await c.post(f"/messages/dead/{delivery}/requeue", data={"csrf": "forged"})
        assert forged.status_code == 403
        assert (await c.get(f"/messages/{uuid.uuid4()}")).status_code == 404
        assert (await c.get("/messages/not-an-id")).status_code == 404


async def test_a_viewer_reads_and_cannot_requeue_and_tenants_stay_apart(db, app) -> None:
    owner, ctx = await messaging(db, app)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://testserver") as api:
        (inst,) = await instances(api, ctx, "reviewer")
        sent = await send(api, ctx, to={"agent": "reviewer"}, max_retries=0)
        await receive(api, ctx, "reviewer", inst)
        await api.post(f"/v1/messages/{sent['id']}/nack", headers=ctx.headers,
                       json={"instance": str(inst)})
    delivery = sent["deliveries"][0]["id"]
    viewer = await person(db, "viewer", tenant=owner)
    async with browser(app) as c:
        token = await sign_in(c, viewer)
        r = await c.get("/messages")
        assert r.status_code == 200 and f'data-dead-message="{delivery}"' in r.text
        assert "/requeue" not in r.text
        refused = await c.post(f"/messages/dead/{delivery}/requeue", data={"csrf": token})
        assert refused.status_code == 403
    stranger = await person(db)
    async with browser(app) as c:
        token = await sign_in(c, stranger)
        r = await c.get("/messages")
        assert sent["id"] not in r.text
        assert (await c.get(f"/messages/{sent['id']}")).status_code == 404
        theirs = await c.post(f"/messages/dead/{delivery}/requeue", data={"csrf": token})
        assert theirs.status_code == 404
