"""Many concurrent streamed requests from two client processes against a key budget
that admits exactly some of them: exactly that many complete, the rest are refused, the
key's recorded spend is the sum of its calls, and no hold is left."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

import pytest

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.llm.tokens import estimate_prompt
from tests.gateway.helpers import NO_HOLD, add_provider, gateway_tenant, live_server, one, settled
from tests.llm.vendors import KEY, OpenAIHandler, serve

CLIENTS = Path(__file__).with_name("stream_clients.py")
REQUESTS, ADMITTED, MAX_TOKENS = 200, 50, 64
MESSAGES = [{"role": "user", "content": "Tell me about Oslo."}]


@pytest.mark.slow
async def test_a_key_budget_admits_exactly_its_share(
    db: Database, settings: Settings, endpoints
) -> None:
    t = await gateway_tenant(db)
    worst = estimate_prompt(MESSAGES) + MAX_TOKENS
    async with db.admin_connection() as conn:
        await conn.execute(
            "INSERT INTO api_key_budgets (api_key_id, tenant_id, token_budget)"
            " VALUES (%s, %s, %s)", [t.api_key_id, t.tenant_id, ADMITTED * worst])
    with serve(OpenAIHandler) as vendor, live_server(settings, endpoints) as url:
        await add_provider(db, settings, t.tenant_id, name="up", type="openai_compatible",
                           base_url=vendor.url + "/v1", api_key=KEY, model="gpt-4o-mini")
        # Slow enough that every request asks for its hold before the first one settles.
        vendor.chunk_delay = 0.3
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, str(CLIENTS), url, t.api_key, str(REQUESTS // 2),
                str(MAX_TOKENS), stdin=PIPE, stdout=PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            for _ in range(2)
        ]
        for p in procs:
            assert (await p.stdout.readline()).strip() == b"ready"
        for p in procs:
            p.stdin.write(b"go\n")
            await p.stdin.drain()
        outs = await asyncio.wait_for(
            asyncio.gather(*(p.communicate() for p in procs)), 240)
        results = [json.loads(out) for out, _ in outs]
    assert [r["other"] for r in results] == [[], []], results
    assert sum(r["completed"] for r in results) == ADMITTED
    assert sum(r["refused"] for r in results) == REQUESTS - ADMITTED
    assert await settled(db, t.tenant_id) == NO_HOLD
    spend = await one(
        db,
        "SELECT b.tokens_used, (SELECT sum(total_tokens) FROM llm_calls c"
        " WHERE c.api_key_id = b.api_key_id) AS calls, (SELECT count(*) FROM llm_calls c"
        " WHERE c.api_key_id = b.api_key_id AND status = 'completed') AS completed,"
        " (SELECT sum(prompt_tokens + completion_tokens) FROM usage_records u"
        " WHERE u.api_key_id = b.api_key_id) AS ledger"
        " FROM api_key_budgets b WHERE b.api_key_id = %s",
        t.api_key_id,
    )
    assert spend["completed"] == ADMITTED
    assert spend["tokens_used"] == spend["calls"] == spend["ledger"] > 0
