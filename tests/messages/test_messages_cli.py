"""`agentplane messages send|list|show|tail|dead|requeue` as real subprocesses against a
live server (--url and an API key): sent to an agent and to everyone, listed by sender,
recipient and status, shown with its copies, followed as it is sent, requeued once dead;
bad input is one line with exit code 2 and sends nothing."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.conftest import cli_env, run_cli
from tests.gateway.helpers import live_server
from tests.messages.helpers import instances, receive
from tests.runtime.helpers import count, tenant


@pytest.fixture(scope="module")
def server(settings, endpoints):
    with live_server(settings, endpoints) as url:
        yield url


@pytest.fixture
async def team(db, server):
    """A tenant with agents reviewer (2 instances) and author (1), and its CLI."""
    ctx = await tenant(db)
    async with httpx.AsyncClient(base_url=server) as http:
        reviewers = await instances(http, ctx, "reviewer", 2)
        (author,) = await instances(http, ctx, "author")
    env = cli_env(db.settings, AGENTPLANE_URL=server, AGENTPLANE_API_KEY=ctx.api_key)

    async def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(run_cli, "messages", *args, env=env)

    return ctx, reviewers, author, env, cli


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], needle: str) -> None:
    assert result.returncode == 2, result.stdout
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: ") and needle in result.stderr, result.stderr


async def test_send_list_show_and_tail(team, server) -> None:
    _, _, author, env, cli = team
    tail = subprocess.Popen(  # noqa: ASYNC220 - it runs beside the sends, read at the end
        [sys.executable, "-m", "agentplane", "messages", "tail", "--recipient", "reviewer",
         "--last", "0", "--count", "2", "--interval", "0.2", "--json"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        await asyncio.sleep(2)  # it has started and looked once
        first = ok(await cli("send", "--to", "agent:reviewer", "--from", str(author),
                             "--type", "review.request", "--payload", '{"pr": 7}',
                             "--correlation-id", "pr-7", "--priority", "5"))
        assert first.startswith("message ") and first.strip().endswith(
            "sent to agent reviewer (1 copy)"), first
        everyone = ok(await cli("send", "--to", "broadcast", "--type", "hello"))
        assert everyone.strip().endswith("sent to broadcast (3 copies)"), everyone
        followed, err = await asyncio.to_thread(tail.communicate, timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    ids = [first.split()[1], everyone.split()[1]]
    assert [json.loads(line)["id"] for line in followed.splitlines()] == ids, "in send order"

    by_author = json.loads(ok(await cli("list", "--sender", "author", "--json")))
    assert [m["id"] for m in by_author["items"]] == ids[:1]
    to_reviewer = json.loads(ok(await cli("list", "--recipient", "reviewer", "--json")))
    assert [m["id"] for m in to_reviewer["items"]] == ids[::-1]
    table = ok(await cli("list", "--status", "pending"))
    assert all(i in table for i in ids) and "review.request" in table and "author" in table
    shown = json.loads(ok(await cli("show", ids[0][:8])))  # a unique start of its id
    assert (shown["payload"], shown["correlation_id"], shown["from_agent"]) == (
        {"pr": 7}, "pr-7", "author")
    assert [d["agent"] for d in shown["deliveries"]] == ["reviewer"]


async def test_a_dead_message_is_listed_and_requeued(team, server) -> None:
    ctx, reviewers, _, _, cli = team
    sent = ok(await cli("send", "--to", f"instance:{reviewers[0]}", "--type", "flaky",
                        "--max-retries", "0")).split()[1]
    async with httpx.AsyncClient(base_url=server) as http:
        assert len(await receive(http, ctx, "reviewer", reviewers[0])) == 1
        r = await http.post(f"/v1/messages/{sent}/nack", headers=ctx.headers,
                            json={"instance": str(reviewers[0]), "error": "bad input"})
        assert r.json() == {"status": "dead"}
    dead = json.loads(ok(await cli("dead", "--json")))["items"]
    assert [(d["message"]["id"], d["last_error"]) for d in dead] == [(sent, "bad input")]
    assert "bad input" in ok(await cli("dead"))
    delivery = dead[0]["delivery_id"]
    assert ok(await cli("requeue", delivery[:8])).strip() == \
        f"message {sent} requeued (pending)"
    one_line_error(await cli("requeue", delivery), "is pending, not dead")
    one_line_error(await cli("requeue", delivery[:8]), "no dead message whose id starts with")
    assert json.loads(ok(await cli("dead", "--json")))["items"] == []


async def test_bad_input_is_one_line_and_sends_nothing(team, db, tmp_path: Path) -> None:
    ctx, _, _, env, cli = team
    before = await count(db, "messages", ctx.tenant_id)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"text": "x" * 300_000}))
    nobody = str(uuid.uuid4())
    for args, needle in [
        (("send", "--to", "agent:nobody", "--type", "x"), "agent nobody not found"),
        (("send", "--to", "somewhere", "--type", "x"), "use agent:SLUG"),
        (("send", "--to", "agent:reviewer", "--type", "x", "--payload", "{bad"),
         "--payload: not valid JSON"),
        (("send", "--to", "agent:reviewer", "--type", "x", "--payload", "@nofile.json"),
         "no file"),
        (("send", "--to", "agent:reviewer", "--type", "x", "--payload", f"@{huge}"),
         "a message's payload is at most"),
        (("send", "--to", "agent:reviewer", "--type", "x", "--ttl", "-5"), "ttl_s"),
        (("send", "--to", f"instance:{nobody}", "--type", "x"), "not found"),
        (("show", "not-an-id"), "is not a message id"),
        (("show", nobody), f"message {nobody} not found"),
        (("requeue", nobody), f"dead message {nobody} not found"),
        (("list", "--recipient", "nobody"), "agent nobody not found"),
        (("list", "--status", "lost"), "status"),
    ]:
        result = await cli(*args)
        assert "Traceback" not in result.stderr, (args, result.stderr)
        one_line_error(result, needle)
    wrong = await asyncio.to_thread(run_cli, "messages", "list",
                                    env={**env, "AGENTPLANE_API_KEY": "ap_wrong"})
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: ")
    assert await count(db, "messages", ctx.tenant_id) == before
