"""Aliases: virtual models whose deployments are tried in turn (weighted or by
priority), managed over agentplane's own API (problem+json) and named by the SDK."""

from __future__ import annotations

from collections import Counter

import openai

from agentplane.config import Settings
from agentplane.db.pool import Database
from tests.gateway.helpers import NO_HOLD, add_provider, gateway_tenant, rows, settled
from tests.llm.vendors import KEY, OpenAIHandler, serve

ASK = [{"role": "user", "content": "Hello?"}]


async def test_aliases_route_fall_over_and_are_listed(
    db: Database, settings: Settings, url: str, client
) -> None:
    t = await gateway_tenant(db, scopes=["llm:invoke", "llm:read", "llm:write"])
    with serve(OpenAIHandler) as broken, serve(OpenAIHandler) as good:
        for name, vendor in (("broken", broken), ("good", good)):
            await add_provider(db, settings, t.tenant_id, name=name, type="openai_compatible",
                               base_url=vendor.url + "/v1", api_key=KEY, model="gpt-4o-mini",
                               config={"max_retries": 0})
        r = await client.post("/v1/gateway/aliases", headers=t.headers, json={
            "name": "fast", "strategy": "priority",
            "deployments": [{"name": "broken/gpt-4o-mini"}, {"name": "good/m-2"}]})
        assert r.status_code == 201, r.text
        r = await client.post("/v1/gateway/aliases", headers=t.headers, json={
            "name": "spread", "deployments": [{"name": "good/a", "weight": 3},
                                              {"name": "good/b", "weight": 1},
                                              {"name": "broken", "weight": 0}]})
        assert r.status_code == 201, r.text
        bad = await client.post("/v1/gateway/aliases", headers=t.headers, json={
            "name": "x", "deployments": [{"name": "nowhere/m"}]})
        assert bad.status_code == 404
        assert bad.headers["content-type"] == "application/problem+json"
        twice = await client.post("/v1/gateway/aliases", headers=t.headers, json={
            "name": "fast", "deployments": [{"name": "good"}]})
        assert twice.status_code == 409

        sdk = openai.OpenAI(base_url=url + "/v1", api_key=t.api_key)
        try:
            broken.queue.append((500, {}, {"error": {"message": "down"}}))
            answer = sdk.chat.completions.create(model="fast", messages=ASK)
            assert answer.choices[0].message.content.startswith("Echo from the vendor")
            assert good.requests[-1]["body"]["model"] == "m-2"
            seen = Counter()
            for _ in range(40):
                sdk.chat.completions.create(model="spread", messages=ASK)
                seen[good.requests[-1]["body"]["model"]] += 1
            assert set(seen) == {"a", "b"} and seen["a"] > seen["b"]
            assert {"fast", "spread"} <= {m.id for m in sdk.models.list()}
            for strategy, first in (("cost", "gpt-4o-mini"), ("latency", "l-good")):
                deployments = ([{"name": "good/gpt-4o"}, {"name": "good/gpt-4o-mini"}]
                               if strategy == "cost" else
                               [{"name": "broken/l-broken"}, {"name": "good/l-good"}])
                r = await client.post("/v1/gateway/aliases", headers=t.headers, json={
                    "name": f"by-{strategy}", "strategy": strategy,
                    "deployments": deployments})
                assert r.status_code == 201, r.text
                async with db.admin_connection() as conn:
                    await conn.execute(
                        "UPDATE llm_providers SET response_time = CASE name WHEN 'good'"
                        " THEN 5 ELSE 900 END WHERE tenant_id = %s", [t.tenant_id])
                sdk.chat.completions.create(model=f"by-{strategy}", messages=ASK)
                assert good.requests[-1]["body"]["model"] == first, strategy
        finally:
            sdk.close()
    calls = await rows(db, "SELECT provider, model, status FROM llm_calls WHERE tenant_id = %s"
                       " ORDER BY created_at LIMIT 2", t.tenant_id)
    assert [(c["provider"], c["status"]) for c in calls] == [
        ("broken", "failed"), ("good", "completed")]
    assert await settled(db, t.tenant_id) == NO_HOLD
    listed = await client.get("/v1/gateway/aliases", headers=t.headers)
    assert [a["name"] for a in listed.json()] == ["by-cost", "by-latency", "fast", "spread"]
    gone = await client.delete("/v1/gateway/aliases/fast", headers=t.headers)
    assert gone.status_code == 204
