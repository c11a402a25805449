"""The alias strategy `least_in_flight`: calls go to the deployment with the fewest calls
in flight, this process's counted live and the other processes' as they publish them in
`llm_in_flight`, with no round trip per call."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import openai

from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.gateway.routing import ROUTE_TTL_S
from agentplane.llm import in_flight
from tests.gateway.helpers import NO_HOLD, add_provider, gateway_tenant, rows, settled
from tests.llm.vendors import KEY, OpenAIHandler, serve

ASK = [{"role": "user", "content": "Hello?"}]


async def test_least_in_flight_spreads_and_sees_other_processes(
    db: Database, settings: Settings, url: str, client
) -> None:
    t = await gateway_tenant(db, scopes=["llm:invoke", "llm:write"])
    with serve(OpenAIHandler) as first, serve(OpenAIHandler) as second:
        ids = {}
        for name, vendor in (("first", first), ("second", second)):
            vendor.delay = 1.6
            await add_provider(db, settings, t.tenant_id, name=name, type="openai_compatible",
                               base_url=vendor.url + "/v1", api_key=KEY, model="gpt-4o-mini")
        for r in await rows(db, "SELECT id, name FROM llm_providers WHERE tenant_id = %s",
                            t.tenant_id):
            ids[r["name"]] = r["id"]
        r = await client.post("/v1/gateway/aliases", headers=t.headers, json={
            "name": "busy", "strategy": "least_in_flight",
            "deployments": [{"name": "first"}, {"name": "second"}]})
        assert r.status_code == 201, r.text

        sdk = openai.AsyncOpenAI(base_url=url + "/v1", api_key=t.api_key, max_retries=0)
        try:
            # Together: the first goes to `first`, the next to `second` (one in flight on
            # first), and so on: never more than one apart.
            calls = [asyncio.create_task(sdk.chat.completions.create(model="busy", messages=ASK))
                     for _ in range(8)]
            await asyncio.sleep(in_flight.PUBLISH_EVERY_S + 0.3)  # one publish in
            published = await rows(db, "SELECT provider_id, calls, process FROM llm_in_flight "
                                   "WHERE tenant_id = %s", t.tenant_id)
            await asyncio.gather(*calls)
            assert (len(first.requests), len(second.requests)) == (4, 4)
            # While they were in flight, this process had published its counts.
            assert {r["process"] for r in published} == {in_flight.PROCESS}
            assert sum(r["calls"] for r in published) == 8

            first.delay = second.delay = 0.0
            # Another process says it has 50 calls in flight on `first`: calls go to second.
            await rows(db, "INSERT INTO llm_in_flight (tenant_id, provider_id, process, calls) "
                       "VALUES (%s, %s, gen_random_uuid(), 50) RETURNING 1",
                       t.tenant_id, ids["first"])
            await asyncio.sleep(ROUTE_TTL_S)  # the route is read again, with the counts
            before = Counter(first=len(first.requests), second=len(second.requests))
            for _ in range(3):
                await sdk.chat.completions.create(model="busy", messages=ASK)
            assert len(second.requests) == before["second"] + 3
            assert len(first.requests) == before["first"]

            # A process that stopped writing is gone: its count no longer weighs.
            await rows(db, "UPDATE llm_in_flight SET at = now() - interval '1 minute' "
                       "WHERE process <> %s RETURNING 1", in_flight.PROCESS)
            await asyncio.sleep(ROUTE_TTL_S)
            await sdk.chat.completions.create(model="busy", messages=ASK)
            assert len(first.requests) == before["first"] + 1  # idle both: listed order
        finally:
            await sdk.close()
    # Once nothing is in flight, this process's rows are gone within a publish or two.
    deadline = time.monotonic() + 5
    while await rows(db, "SELECT 1 FROM llm_in_flight WHERE process = %s", in_flight.PROCESS):
        assert time.monotonic() < deadline, "in-flight counts left behind"
        await asyncio.sleep(0.2)
    assert await settled(db, t.tenant_id) == NO_HOLD
