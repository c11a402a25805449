"""Messages over HTTP: send to an agent, an instance, a topic or everyone; receive by
long-poll, ack, nack and retry until dead, requeue; time to live; ordering under a
correlation id; presence; request and reply; and bad input that changes nothing."""

from __future__ import annotations

import asyncio
import uuid

from agentplane.messages import service
from agentplane.messages.inbox import Inbox
from agentplane.messages.models import Destination, MessageIn
from tests.messages.helpers import ack, age, instances, receive, rows, send
from tests.runtime.helpers import tenant


async def test_to_an_agent_received_once_then_acked(db, client):
    ctx = await tenant(db)
    a, b = await instances(client, ctx, "reviewer", 2)
    (sender,) = await instances(client, ctx, "author")
    sent = await send(client, ctx, to={"agent": "reviewer"}, **{"from": {"instance": str(sender)}},
                      type="review.request", priority=5, payload={"pr": 7},
                      correlation_id="pr-7")
    assert sent["to"] == {"agent": "reviewer"} and sent["from_agent"] == "author"
    assert sent["status"] == "pending" and len(sent["deliveries"]) == 1
    got = await receive(client, ctx, "reviewer", a, wait=2)
    assert [(m["id"], m["type"], m["payload"], m["attempt"]) for m in got] == [
        (sent["id"], "review.request", {"pr": 7}, 1)]
    assert await receive(client, ctx, "reviewer", b) == [], "leased to one receiver only"
    r = await ack(client, ctx, sent["id"], b)
    assert r.status_code == 409 and "not leased to instance" in r.json()["detail"]
    assert (await ack(client, ctx, sent["id"], a)).status_code == 204
    r = await ack(client, ctx, sent["id"], a)
    assert r.status_code == 409 and "already acked" in r.json()["detail"]
    shown = (await client.get(f"/v1/messages/{sent['id']}", headers=ctx.headers)).json()
    assert shown["status"] == "acked" and shown["deliveries"][0]["leased_to"] == str(a)
    page = (await client.get("/v1/messages", params={"agent": "author"},
                             headers=ctx.headers)).json()
    assert [m["id"] for m in page["items"]] == [sent["id"]]


async def test_a_message_committed_while_a_receive_runs_is_returned_not_lost(db, client):
    """A message whose transaction began before a receive's and committed while the
    receive ran is leased by it and returned with it, not leased unseen (and delivered
    only once that lease passed): the receive reads the messages it leased after it
    leased them."""
    ctx = await tenant(db)
    (a,) = await instances(client, ctx, "racer")
    async with db.admin_connection() as conn:  # the receive will refresh the heartbeat
        await conn.execute("UPDATE agent_instances SET heartbeat_at = now() - interval '1 minute'"
                           " WHERE id = %s", [a])
    async with db.admin_connection() as holder:
        # Holding the instance's row: the receive's statement starts, then waits on it.
        await holder.execute("SELECT 1 FROM agent_instances WHERE id = %s FOR UPDATE", [a])
        async with db.tenant_connection(ctx.tenant_id) as sender:
            sent = await service.send(sender, ctx.tenant_id, [
                MessageIn(to=Destination(agent="racer"), type="race")])
            receiving = asyncio.create_task(receive(client, ctx, "racer", a))
            await asyncio.sleep(0.5)
            assert not receiving.done()
        # The message is committed; then the receive goes on.
    got = await asyncio.wait_for(receiving, 10)
    assert [m["id"] for m in got] == [str(next(iter(sent)))]


async def test_long_poll_wakes_when_a_message_is_sent(db, client):
    ctx = await tenant(db)
    (a,) = await instances(client, ctx, "waiter")
    waiting = asyncio.create_task(receive(client, ctx, "waiter", a, wait=20))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    sent = await send(client, ctx, to={"instance": str(a)})
    got = await asyncio.wait_for(waiting, 5)
    assert [m["id"] for m in got] == [sent["id"]]


async def test_an_unacked_message_comes_back_then_goes_dead_and_is_requeued(db, client):
    ctx = await tenant(db)
    a, b = await instances(client, ctx, "flaky", 2)
    sent = await send(client, ctx, to={"agent": "flaky"}, max_retries=1)
    assert len(await receive(client, ctx, "flaky", a, lease_s=30)) == 1
    await age(db, sent["id"], 31)  # the lease passes without an ack
    again = await receive(client, ctx, "flaky", b)
    assert [m["attempt"] for m in again] == [2]
    r = await ack(client, ctx, sent["id"], a)
    assert r.status_code == 409, "a lease that passed cannot be acked"
    r = await client.post(f"/v1/messages/{sent['id']}/nack",
                          json={"instance": str(b), "error": "could not parse"},
                          headers=ctx.headers)
    assert r.json() == {"status": "dead"}, "its last attempt"
    dead = (await client.get("/v1/dead-messages", headers=ctx.headers)).json()["items"]
    assert [d["message"]["id"] for d in dead] == [sent["id"]]
    assert [h["error"] for h in dead[0]["history"]] == ["lease expired", "could not parse"]
    assert await receive(client, ctx, "flaky", a) == []
    r = await client.post(f"/v1/dead-messages/{dead[0]['delivery_id']}/requeue",
                          headers=ctx.headers)
    assert r.status_code == 200 and r.json()["status"] == "pending"
    r = await client.post(f"/v1/dead-messages/{dead[0]['delivery_id']}/requeue",
                          headers=ctx.headers)
    assert r.status_code == 409, "no longer dead"
    assert [m["attempt"] for m in await receive(client, ctx, "flaky", a)] == [1]


async def test_nack_delays_redelivery(db, client):
    ctx = await tenant(db)
    (a,) = await instances(client, ctx, "slow")
    sent = await send(client, ctx, to={"agent": "slow"})
    await receive(client, ctx, "slow", a)
    r = await client.post(f"/v1/messages/{sent['id']}/nack",
                          json={"instance": str(a), "delay_s": 60}, headers=ctx.headers)
    assert r.json() == {"status": "pending"}
    assert await receive(client, ctx, "slow", a) == [], "not due for a minute"
    await age(db, sent["id"], 61)
    assert [m["attempt"] for m in await receive(client, ctx, "slow", a)] == [2]


async def test_time_to_live_expires_and_is_counted(db, client):
    ctx = await tenant(db)
    (a,) = await instances(client, ctx, "late")
    old = await send(client, ctx, to={"agent": "late"}, ttl_s=5)
    fresh = await send(client, ctx, to={"agent": "late"}, ttl_s=3600)
    await age(db, old["id"], 6)
    got = await receive(client, ctx, "late", a, limit=10)
    assert [m["id"] for m in got] == [fresh["id"]], "an expired message is never delivered"
    counts = (await client.get("/v1/messages/counts", headers=ctx.headers)).json()
    assert counts == {"expired": 1, "leased": 1}
    r = await client.get("/v1/messages", params={"status": "expired"}, headers=ctx.headers)
    assert [m["id"] for m in r.json()["items"]] == [old["id"]]


async def test_delay_and_priority(db, client):
    ctx = await tenant(db)
    (a,) = await instances(client, ctx, "sorter")
    later = await send(client, ctx, to={"agent": "sorter"}, delay_s=60)
    low = await send(client, ctx, to={"agent": "sorter"}, priority=1)
    high = await send(client, ctx, to={"agent": "sorter"}, priority=8)
    got = await receive(client, ctx, "sorter", a, limit=10)
    assert [m["id"] for m in got] == [high["id"], low["id"]]
    await age(db, later["id"], 61)
    assert [m["id"] for m in await receive(client, ctx, "sorter", a)] == [later["id"]]


async def test_broadcast_and_topic_give_each_live_instance_its_own_copy(db, client):
    ctx = await tenant(db)
    ones = await instances(client, ctx, "one", 2)
    (two,) = await instances(client, ctx, "two")
    stopped = (await instances(client, ctx, "two"))[0]
    r = await client.post(f"/v1/agents/two/instances/{stopped}/status",
                          json={"status": "stopped"}, headers=ctx.headers)
    assert r.status_code == 200, r.text
    sent = await send(client, ctx, to={"broadcast": True}, type="deploy.freeze")
    assert len(sent["deliveries"]) == 3, "one copy per live instance, none for the stopped"
    for slug, inst in (("one", ones[0]), ("one", ones[1]), ("two", two)):
        got = await receive(client, ctx, slug, inst)
        assert [m["id"] for m in got] == [sent["id"]]
        assert (await ack(client, ctx, sent["id"], inst)).status_code == 204
    shown = (await client.get(f"/v1/messages/{sent['id']}", headers=ctx.headers)).json()
    assert shown["status"] == "acked"

    r = await client.post(f"/v1/agents/one/instances/{ones[1]}/subscriptions",
                          json={"topic": "builds"}, headers=ctx.headers)
    assert r.status_code == 201 and r.json() == {"topics": ["builds"]}
    topical = await send(client, ctx, to={"topic": "builds"})
    assert [d["instance_id"] for d in topical["deliveries"]] == [str(ones[1])]
    assert await receive(client, ctx, "one", ones[0]) == []
    assert len(await receive(client, ctx, "one", ones[1])) == 1
    nobody = await send(client, ctx, to={"topic": "nobody-listens"})
    assert nobody["status"] == "unrouted" and nobody["deliveries"] == []


async def test_one_correlation_id_is_delivered_in_send_order(db, client):
    ctx = await tenant(db)
    a, b = await instances(client, ctx, "ordered", 2)
    first = await send(client, ctx, to={"agent": "ordered"}, correlation_id="c1", priority=1)
    second = await send(client, ctx, to={"agent": "ordered"}, correlation_id="c1", priority=9)
    other = await send(client, ctx, to={"agent": "ordered"}, correlation_id="c2")
    got = await receive(client, ctx, "ordered", a, limit=10)
    assert [m["id"] for m in got] == [first["id"], other["id"]], \
        "c1's second waits for its first, whatever its priority"
    assert await receive(client, ctx, "ordered", b) == []
    await ack(client, ctx, first["id"], a)
    assert [m["id"] for m in await receive(client, ctx, "ordered", b)] == [second["id"]]


async def test_a_silent_instance_goes_offline_and_its_messages_move_on(db, client):
    ctx = await tenant(db)
    quiet, alive = await instances(client, ctx, "pair", 2)
    sent = await send(client, ctx, to={"instance": str(quiet)})
    assert await receive(client, ctx, "pair", alive) == [], "addressed to the other"
    async with db.admin_connection() as conn:
        await conn.execute("UPDATE agent_instances SET heartbeat_at = now() - interval '5 min'"
                           " WHERE id = %s", [quiet])
    async with db.tenant_connection(ctx.tenant_id) as conn:
        assert await service.presence(conn, 60) == [quiet]
    got = await receive(client, ctx, "pair", alive)
    assert [m["id"] for m in got] == [sent["id"]]
    history = (await client.get("/v1/agents/pair/instances", headers=ctx.headers)).json()
    mine = next(i for i in history if i["id"] == str(quiet))
    assert mine["status"] == "offline"
    assert (mine["history"][-1]["status"], mine["history"][-1]["reason"]) == (
        "offline", "no heartbeat")
    r = await client.post(f"/v1/agents/pair/instances/{quiet}/heartbeat", headers=ctx.headers)
    assert r.json()["status"] == "idle", "back once it beats again"


async def test_request_and_reply_through_inboxes(db, client):
    ctx = await tenant(db)
    (asker,) = await instances(client, ctx, "asker")
    (answerer,) = await instances(client, ctx, "answerer")

    async def answer() -> None:
        async with Inbox(db, ctx.tenant_id, "answerer", answerer) as inbox:
            async for message in inbox:
                await inbox.reply(message, "answer", {"sum": sum(message.payload["add"])})
                await inbox.ack(message)
                return

    serving = asyncio.create_task(answer())
    async with Inbox(db, ctx.tenant_id, "asker", asker) as inbox:
        reply = await inbox.request({"agent": "answerer"}, "question", {"add": [2, 3]},
                                    within_s=10)
    await asyncio.wait_for(serving, 5)
    assert reply.type == "answer" and reply.payload == {"sum": 5}
    assert reply.from_agent == "answerer"


async def test_a_send_in_a_rolled_back_transaction_was_never_sent(db, client):
    ctx = await tenant(db)
    (a,) = await instances(client, ctx, "txn")
    body = MessageIn(to=Destination(agent="txn"), type="note")
    try:
        async with db.tenant_connection(ctx.tenant_id) as conn:
            await service.send(conn, ctx.tenant_id, [body])
            raise RuntimeError("the transaction fails after the send")
    except RuntimeError:
        pass
    assert await receive(client, ctx, "txn", a, wait=1) == []
    assert await rows(db, "SELECT 1 FROM messages WHERE tenant_id = %s", ctx.tenant_id) == []


async def test_the_anthropic_messages_api_keeps_its_route(db, client):
    ctx = await tenant(db)
    r = await client.post("/v1/messages", json={"model": "nope", "max_tokens": 5,
                                                "messages": [{"role": "user", "content": "hi"}]},
                          headers={**ctx.headers, "anthropic-version": "2023-06-01"})
    assert r.json()["type"] == "error", "the gateway answered, in Anthropic's shape"
    assert await rows(db, "SELECT 1 FROM messages WHERE tenant_id = %s", ctx.tenant_id) == []


async def test_bad_input_is_refused_and_sends_nothing(db, client):
    ctx = await tenant(db)
    other = await tenant(db)
    (a,) = await instances(client, ctx, "solo")
    (foreign,) = await instances(client, other, "solo")
    bad = [
        ({"to": {"agent": "ghost"}, "type": "x"}, 404, "agent ghost not found"),
        ({"to": {"instance": str(uuid.uuid4())}, "type": "x"}, 404, "not found"),
        ({"to": {"instance": str(foreign)}, "type": "x"}, 404, "not found"),
        ({"to": {"agent": "solo"}, "type": "x", "from": {"instance": str(foreign)}}, 404,
         "not found"),
        ({"to": {"agent": "solo"}, "type": "x", "ttl_s": -1}, 422, None),
        ({"to": {"agent": "solo"}, "type": "x", "max_retries": 1000}, 422, None),
        ({"to": {"agent": "solo", "topic": "t"}, "type": "x"}, 422, None),
        ({"to": {}, "type": "x"}, 422, None),
        ({"to": {"agent": "solo"}, "type": "x", "payload": {"blob": "x" * 300_000}}, 413,
         "at most"),
        ({"to": {"agent": "solo"}, "type": "x", "run_id": str(uuid.uuid4())}, 404, "not found"),
    ]
    for body, status, detail in bad:
        r = await client.post("/v1/messages", json=body, headers=ctx.headers)
        assert r.status_code == status, (body, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
        if detail:
            assert detail in r.json()["detail"], r.text
    assert await rows(db, "SELECT 1 FROM messages WHERE tenant_id = %s", ctx.tenant_id) == []
    r = await client.get(f"/v1/agents/solo/instances/{foreign}/messages", headers=ctx.headers)
    assert r.status_code == 404, "another tenant's instance"
    r = await client.post(f"/v1/messages/{uuid.uuid4()}/ack", json={"instance": str(a)},
                          headers=ctx.headers)
    assert r.status_code == 404
    sent = await send(client, other, to={"agent": "solo"})
    r = await client.get(f"/v1/messages/{sent['id']}", headers=ctx.headers)
    assert r.status_code == 404, "another tenant's message"
    r = await client.get("/v1/messages", params={"cursor": "nonsense"}, headers=ctx.headers)
    assert r.status_code == 422
