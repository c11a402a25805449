"""Server-side request forgery: a provider's base_url may not lead into the deployment's
own network, in any spelling, nor through a redirect; allowed networks are opt-in, and
the address checked is the one connected to."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from agentplane.app import create_app
from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.llm.adapters import AdapterConfig, adapter_for
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.errors import ProviderError
from agentplane.outbound import Guard, OutboundRefused, guard, parse_networks
from tests.conftest import make_settings
from tests.llm.helpers import MESSAGES, tenant
from tests.llm.vendors import KEY, LOCAL, OpenAIHandler, serve

REFUSED = [
    "http://127.0.0.1:{port}/v1",
    "http://2130706433:{port}/v1",  # 127.0.0.1 as one decimal number
    "http://0x7f000001:{port}/v1",  # ... in hexadecimal
    "http://0177.0.0.1:{port}/v1",  # ... with an octal first part
    "http://127.1:{port}/v1",  # ... with parts left out
    "http://[::ffff:127.0.0.1]:{port}/v1",  # ... mapped into IPv6
    "http://[::1]:{port}/v1",
    "http://localhost:{port}/v1",  # a name that resolves to loopback
    "http://10.1.2.3/v1",
    "http://172.16.0.9/v1",
    "http://192.168.1.1/v1",
    "http://[fc00::1]/v1",
    "http://[fe80::1]/v1",
    "http://169.254.169.254/latest/meta-data",
    "http://metadata.google.internal/computeMetadata/v1",
    "http://0.0.0.0:{port}/v1",
]


@pytest.fixture(scope="module")
def settings(pg_home, pg_port, database_name) -> Settings:
    """As a server reachable by others runs: nothing but public addresses."""
    return make_settings(pg_home, pg_port, database_name, outbound_allow="")


@pytest.fixture(scope="module")
async def local_app(settings: Settings, endpoints) -> AsyncIterator[Any]:
    """The same database served by an app that was told loopback may be reached."""
    local = settings.model_copy(update={"outbound_allow": "127.0.0.0/8"})
    database = Database(local, endpoints)
    await database.open()
    yield create_app(local, db=database)
    await database.close()


async def test_every_spelling_of_an_inner_address_is_refused_at_creation(
    client: httpx.AsyncClient, db: Database
) -> None:
    t = await tenant(db)
    for i, template in enumerate(REFUSED):
        url = template.format(port=8000)
        r = await client.post("/v1/llm/providers", headers=t.headers, json={
            "name": f"inner-{i}", "type": "openai_compatible", "base_url": url})
        assert r.status_code == 422, (url, r.text)
        problem = r.json()
        assert problem["errors"][0]["field"] == "base_url", problem
        if "0177" not in url:  # which httpx cannot read at all: refused as no URL
            assert "OUTBOUND_ALLOW" in problem["detail"] or "never" in problem["detail"], url
    listed = await client.get("/v1/llm/providers", headers=t.headers)
    assert {p["name"] for p in listed.json()} == {"offline"}  # nothing was written
    # A public address is accepted (a name that does not resolve here is checked per call).
    r = await client.post("/v1/llm/providers", headers=t.headers, json={
        "name": "public", "type": "openai_compatible", "base_url": "https://8.8.8.8/v1"})
    assert r.status_code == 201, r.text
    r = await client.patch("/v1/llm/providers/public", headers=t.headers,
                           json={"base_url": "http://192.168.0.10/v1"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "base_url", r.text
    got = await client.get("/v1/llm/providers/public", headers=t.headers)
    assert got.json()["base_url"] == "https://8.8.8.8/v1"


async def test_an_allowed_network_is_reached_and_metadata_never(
    local_app, db: Database
) -> None:
    t = await tenant(db)
    transport = httpx.ASGITransport(app=local_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as local:
        with serve(OpenAIHandler) as vendor:
            r = await local.post("/v1/llm/providers", headers=t.headers, json={
                "name": "ollama", "type": "openai_compatible", "base_url": vendor.url + "/v1",
                "api_key": KEY, "model": "m"})
            assert r.status_code == 201, r.text
            tested = await local.post("/v1/llm/providers/ollama/test", headers=t.headers)
            assert tested.status_code == 200, tested.text
            assert len(vendor.requests) == 1
        r = await local.post("/v1/llm/providers", headers=t.headers, json={
            "name": "meta", "type": "openai_compatible",
            "base_url": "http://169.254.169.254/v1"})
        assert r.status_code == 422 and "never reached" in r.json()["detail"], r.text


async def test_a_call_is_checked_again_when_it_goes_out(
    local_app, client: httpx.AsyncClient, db: Database
) -> None:
    """A provider saved while loopback was allowed (or whose name resolved elsewhere then)
    is refused by a server that does not allow it, before any byte is sent."""
    t = await tenant(db)
    transport = httpx.ASGITransport(app=local_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as local:
        with serve(OpenAIHandler) as vendor:
            r = await local.post("/v1/llm/providers", headers=t.headers, json={
                "name": "was-local", "type": "openai_compatible",
                "base_url": vendor.url + "/v1", "api_key": KEY, "model": "m"})
            assert r.status_code == 201, r.text
            tested = await client.post("/v1/llm/providers/was-local/test", headers=t.headers)
            assert tested.status_code == 502, tested.text
            assert "not reached" in tested.json()["detail"]
            assert "loopback" in tested.json()["detail"]
            assert vendor.requests == []


async def test_a_redirect_is_not_followed() -> None:
    with serve(OpenAIHandler) as vendor, serve(OpenAIHandler) as inner:
        vendor.queue.append((307, {"Location": inner.url + "/v1/chat/completions"}, {}))
        adapter = adapter_for(AdapterConfig(type="openai_compatible", name="v", api_key=KEY,
                                            base_url=vendor.url + "/v1", model="m",
                                            guard=LOCAL))
        with pytest.raises(ProviderError, match="redirect") as info:
            await adapter.complete(ChatRequest(messages=MESSAGES))
        assert inner.url not in info.value.detail  # the vendor's answer is not echoed
        assert len(vendor.requests) == 1 and inner.requests == []


async def test_the_checked_address_is_the_one_connected_to() -> None:
    """The connection goes to the address resolved and checked, while the vendor still
    sees its own name in the Host header."""
    with serve(OpenAIHandler) as vendor:
        port = vendor.server_address[1]
        only_v4 = Guard(parse_networks("127.0.0.0/8"))
        adapter = adapter_for(AdapterConfig(type="openai_compatible", name="v", api_key=KEY,
                                            base_url=f"http://localhost:{port}/v1", model="m",
                                            guard=only_v4))
        result = await adapter.complete(ChatRequest(messages=MESSAGES))
        assert result.content.startswith("Echo from the vendor")
        assert vendor.requests[0]["headers"]["Host"] == f"localhost:{port}"
    assert await only_v4.address("localhost", port) == parse_networks("127.0.0.1")[0][0]


async def test_the_guard_reads_every_spelling() -> None:
    strict = Guard()
    for template in REFUSED:
        url = httpx.URL(template.format(port=80)) if "0177" not in template else None
        host = url.host if url else "0177.0.0.1"
        with pytest.raises(OutboundRefused):
            await strict.address(host, 80)
    assert str(await strict.address("8.8.8.8", 443)) == "8.8.8.8"
    with pytest.raises(OutboundRefused, match="only http"):
        await strict.check_url("file:///etc/passwd")
    with pytest.raises(OutboundRefused, match="only http"):
        await strict.check_url("gopher://example.com/")
    # Loopback is reachable by default on a developer's machine only.
    dev = Settings(env="development")
    prod = Settings(env="production")
    assert dev.env == "development" and await guard(dev).address("127.0.0.1", 80)
    with pytest.raises(OutboundRefused):
        await guard(prod).address("127.0.0.1", 80)
    with pytest.raises(OutboundRefused, match="never"):
        await guard(Settings(env="production", outbound_allow="169.254.0.0/16")).address(
            "169.254.169.254", 80)
    with pytest.raises(ValueError, match="not an IP address"):
        parse_networks("10.0.0.0/8,intranet")


async def test_through_a_proxy_the_named_address_is_still_checked(monkeypatch) -> None:
    """With HTTP(S)_PROXY set, the proxy connects (and resolves names); an inner address
    named in the URL itself is refused before anything reaches the proxy."""
    with serve(OpenAIHandler) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        inner = adapter_for(AdapterConfig(type="openai_compatible", name="inner", api_key=KEY,
                                          base_url="http://10.9.8.7/v1", model="m",
                                          max_retries=0))
        with pytest.raises(ProviderError, match="not reached"):
            await inner.complete(ChatRequest(messages=MESSAGES))
        assert proxy.requests == []
        public = adapter_for(AdapterConfig(type="openai_compatible", name="public",
                                           api_key=KEY, base_url="http://llm.example.com/v1",
                                           model="m", max_retries=0))
        with pytest.raises(ProviderError):  # the stand-in proxy has no such route: a 404
            await public.complete(ChatRequest(messages=MESSAGES))
        assert [r["path"] for r in proxy.requests] == [
            "http://llm.example.com/v1/chat/completions"]
