"""Recording: each call writes an LLM call and a usage record with its cost in Decimal,
from the price valid when it was made; providers are stored with their key encrypted."""

from __future__ import annotations

import asyncio
import logging
import stat
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from agentplane import crypto
from agentplane.config import Settings
from agentplane.db.pool import Database
from agentplane.errors import Conflict, NotFound, ValidationFailed
from agentplane.llm import service
from agentplane.llm.adapters.base import ChatRequest, ChatResult, TextDelta
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext, CallOutcome
from agentplane.llm.models import ModelCreate, PriceSet, ProviderCreate, ProviderUpdate
from agentplane.llm.recording import cost_of
from agentplane.llm.tokens import count_tokens
from tests.llm.helpers import MESSAGES, row, tenant
from tests.llm.vendors import KEY, AnthropicHandler, OpenAIHandler, serve


@pytest.fixture(scope="module")
def llm(db: Database, settings: Settings) -> LLM:
    return LLM(db, settings)


async def add(db: Database, settings: Settings, tenant_id, **kw):
    async with db.tenant_connection(tenant_id) as conn:
        return await service.create_provider(conn, settings, ProviderCreate(**kw))


async def test_offline_call_records_call_and_usage(db: Database, llm: LLM) -> None:
    t = await tenant(db)
    ctx = CallContext(tenant_id=t.tenant_id, user_id=t.user_id, api_key_id=t.api_key_id)
    out = await llm.complete(ctx, ChatRequest(messages=MESSAGES))
    assert out.provider == "offline" and out.cost_usd == Decimal(0) and out.cost_source == "price"
    call = await row(db, "SELECT * FROM llm_calls WHERE id = %s", out.call_id)
    assert call["status"] == "completed" and call["model"] == "offline-1"
    assert call["response_content"] == out.result.content
    assert call["total_tokens"] == out.result.prompt_tokens + out.result.completion_tokens
    assert (
        call["request"]["messages"] == MESSAGES and call["request"]["params"]["max_tokens"] == 1024
    )
    usage = await row(db, "SELECT * FROM usage_records WHERE llm_call_id = %s", out.call_id)
    assert usage["tenant_id"] == t.tenant_id and usage["user_id"] == t.user_id
    assert usage["api_key_id"] == t.api_key_id and usage["total_tokens"] == call["total_tokens"]


def test_cost_arithmetic_is_decimal_with_cached_input_rate() -> None:
    price = {
        "input_per_mtok": Decimal("2.50"),
        "output_per_mtok": Decimal("10.00"),
        "cached_input_per_mtok": Decimal("1.25"),
    }
    result = ChatResult(
        content="", model="m", prompt_tokens=1000, completion_tokens=500, cached_tokens=400
    )
    cost, source = cost_of(result, price)
    assert source == "price"
    assert cost == Decimal("0.0015") + Decimal("0.0005") + Decimal("0.005")
    assert cost_of(result, None) == (None, "unknown")
    result.cost = Decimal("0.123")
    assert cost_of(result, price) == (Decimal("0.123"), "provider")


async def test_price_change_keeps_old_costs(db: Database, llm: LLM, settings: Settings) -> None:
    t = await tenant(db)
    async with db.tenant_connection(t.tenant_id) as conn:
        model = await service.create_model(
            conn,
            ModelCreate(
                provider="offline",
                name="offline-1",
                price=PriceSet(
                    input_per_mtok=Decimal("1"),
                    output_per_mtok=Decimal("2"),
                    valid_from=datetime.now(UTC) - timedelta(days=1),
                ),
            ),
        )
    ctx = CallContext(tenant_id=t.tenant_id)
    first = await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=8))
    expected = (Decimal(first.result.prompt_tokens) * 1 + 8 * 2) / 1_000_000
    assert first.cost_usd == expected, "the tenant's own price wins over the built-in zero"
    async with db.tenant_connection(t.tenant_id) as conn:
        await service.set_price(
            conn, model.id, PriceSet(input_per_mtok=Decimal("10"), output_per_mtok=Decimal("20"))
        )
    second = await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=8))
    assert second.cost_usd == expected * 10
    old = await row(db, "SELECT cost_usd FROM llm_calls WHERE id = %s", first.call_id)
    assert old["cost_usd"] == expected
    async with db.tenant_connection(t.tenant_id) as conn:
        models = await service.list_models(conn, "offline")
        with pytest.raises(Conflict, match="cannot start before"):
            await service.set_price(
                conn,
                model.id,
                PriceSet(
                    input_per_mtok=Decimal("1"),
                    output_per_mtok=Decimal("1"),
                    valid_from=datetime.now(UTC) - timedelta(days=30),
                ),
            )
    mine = next(m for m in models if not m.builtin)
    assert [p.input_per_mtok for p in mine.prices] == [Decimal("10"), Decimal("1")]
    assert mine.prices[1].valid_to == mine.prices[0].valid_from


async def test_overlapping_prices_are_refused_by_the_database(db: Database) -> None:
    t = await tenant(db)
    async with db.tenant_connection(t.tenant_id) as conn:
        model = await service.create_model(conn, ModelCreate(provider="x", name="y"))
    with pytest.raises(Conflict, match="already valid"):
        async with db.tenant_connection(t.tenant_id) as conn:
            for start in ("2025-01-01", "2025-02-01"):
                await conn.execute(
                    "INSERT INTO llm_prices (tenant_id, model_id, input_per_mtok, output_per_mtok, "
                    "valid_from, valid_to) VALUES (%s, %s, 1, 1, %s, '2025-03-01')",
                    [t.tenant_id, model.id, start],
                )


async def test_unknown_price_records_null_cost_and_warns(
    db: Database, llm: LLM, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    t = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        await add(
            db,
            settings,
            t.tenant_id,
            name="local-vllm",
            type="openai_compatible",
            base_url=vendor.url + "/v1",
            api_key=KEY,
            model="llama-3-8b",
        )
        with caplog.at_level(logging.WARNING, "agentplane.llm"):
            out = await llm.complete(
                CallContext(tenant_id=t.tenant_id),
                ChatRequest(messages=MESSAGES),
                provider="local-vllm",
            )
    assert out.cost_usd is None and out.cost_source == "unknown"
    assert "no price for local-vllm/llama-3-8b" in caplog.text
    usage = await row(
        db, "SELECT cost_usd, cost_source FROM usage_records WHERE llm_call_id = %s", out.call_id
    )
    assert usage == {"cost_usd": None, "cost_source": "unknown"}


async def test_provider_reported_cost_wins(db: Database, llm: LLM, settings: Settings) -> None:
    t = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        vendor.cost = 0.5
        await add(
            db,
            settings,
            t.tenant_id,
            name="openai",
            type="openai_compatible",
            base_url=vendor.url + "/v1",
            api_key=KEY,
            model="gpt-4o",
        )
        out = await llm.complete(
            CallContext(tenant_id=t.tenant_id), ChatRequest(messages=MESSAGES), provider="openai"
        )
    assert (out.cost_usd, out.cost_source) == (Decimal("0.5"), "provider")


@pytest.mark.parametrize(
    ("kind", "handler", "model", "rate_in", "rate_out", "rate_cached"),
    [
        ("openai_compatible", OpenAIHandler, "gpt-4o", "2.50", "10.00", "1.25"),
        ("anthropic", AnthropicHandler, "claude-sonnet-4-0", "3.00", "15.00", "0.30"),
    ],
)
async def test_streaming_records_the_same_as_complete(
    db: Database, llm: LLM, settings: Settings, kind, handler, model, rate_in, rate_out, rate_cached
) -> None:
    t = await tenant(db)
    name = "openai" if kind == "openai_compatible" else "anthropic"
    with serve(handler) as vendor:
        vendor.cached_tokens = 2
        base = vendor.url + ("/v1" if kind == "openai_compatible" else "")
        await add(
            db, settings, t.tenant_id, name=name, type=kind, base_url=base, api_key=KEY, model=model
        )
        ctx = CallContext(tenant_id=t.tenant_id)
        plain = await llm.complete(
            ctx, ChatRequest(messages=MESSAGES, max_tokens=64), provider=name
        )
        deltas, outcome = [], None
        async for item in llm.stream(
            ctx, ChatRequest(messages=MESSAGES, max_tokens=64), provider=name
        ):
            if isinstance(item, TextDelta):
                deltas.append(item.text)
            else:
                outcome = item
    assert isinstance(outcome, CallOutcome)
    assert "".join(deltas) == outcome.result.content == plain.result.content
    assert outcome.cost_usd == plain.cost_usd
    r = plain.result
    expected = (
        (r.prompt_tokens - 2) * Decimal(rate_in)
        + 2 * Decimal(rate_cached)
        + r.completion_tokens * Decimal(rate_out)
    ) / 1_000_000
    assert plain.cost_usd == expected
    rows = await row(
        db,
        "SELECT count(*) AS n, sum(total_tokens) AS t, bool_or(stream) AS s, "
        "count(DISTINCT cost_usd) AS costs FROM llm_calls WHERE tenant_id = %s",
        t.tenant_id,
    )
    assert rows == {"n": 2, "t": 2 * (r.prompt_tokens + r.completion_tokens), "s": True, "costs": 1}


async def test_stream_closed_early_pays_what_it_generated(db: Database, llm: LLM) -> None:
    t = await tenant(db)
    stream = llm.stream(CallContext(tenant_id=t.tenant_id), ChatRequest(messages=MESSAGES))
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    await stream.aclose()
    held = await row(
        db, "SELECT tokens_reserved, monthly_token_usage FROM tenants WHERE id = %s", t.tenant_id
    )
    call = await row(
        db, "SELECT status, error, response_content, completion_tokens, total_tokens,"
        " tokens_estimated FROM llm_calls WHERE tenant_id = %s", t.tenant_id,
    )
    assert held == {"tokens_reserved": 0, "monthly_token_usage": call["total_tokens"]}
    assert call["status"] == "cancelled" and call["error"] == "cancelled by the caller"
    assert call["response_content"] == first.text and call["tokens_estimated"]
    assert call["completion_tokens"] == count_tokens(first.text)


async def test_provider_key_is_encrypted_and_write_only(db: Database, settings: Settings) -> None:
    t = await tenant(db)
    p = await add(db, settings, t.tenant_id, name="openai", type="openai_compatible", api_key=KEY)
    assert p.has_api_key and p.base_url == "https://api.openai.com/v1"
    assert KEY not in p.model_dump_json()
    stored = await row(db, "SELECT api_key_ciphertext FROM llm_providers WHERE id = %s", p.id)
    blob = bytes(stored["api_key_ciphertext"])
    assert KEY.encode() not in blob and len(blob) > len(KEY)
    assert crypto.decrypt(settings, blob, f"llm_providers:{p.id}") == KEY
    key_file = settings.home / "keys" / "encryption.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    # Bound to its row: the same ciphertext under another provider's id does not decrypt.
    from agentplane.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be decrypted"):
        crypto.decrypt(settings, blob, "llm_providers:00000000-0000-0000-0000-000000000000")
    async with db.tenant_connection(t.tenant_id) as conn:
        p2 = await service.update_provider(conn, settings, "openai", ProviderUpdate(api_key=""))
    assert not p2.has_api_key


def test_encryption_key_from_the_environment(settings: Settings) -> None:
    import base64
    import os

    other = settings.model_copy(
        update={"encryption_key": base64.urlsafe_b64encode(os.urandom(32)).decode()}
    )
    from pydantic import SecretStr

    other = settings.model_copy(update={"encryption_key": SecretStr(other.encryption_key)})
    blob = crypto.encrypt(other, "s3cret", "ctx")
    assert crypto.decrypt(other, blob, "ctx") == "s3cret"
    from agentplane.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot be decrypted"):
        crypto.decrypt(settings, blob, "ctx")
    with pytest.raises(ConfigError, match="32 bytes"):
        crypto.encrypt(settings.model_copy(update={"encryption_key": SecretStr("short")}), "x", "c")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "x", "type": "gemini"}, "type"),
        ({"name": "x", "type": "openai_compatible", "base_url": "ftp://host/v1"}, "base_url"),
        ({"name": "x", "type": "openai_compatible", "base_url": "not a url"}, "base_url"),
        ({"name": "bad name!", "type": "offline"}, "name"),
        ({"name": "x", "type": "offline", "weight": -1}, "weight"),
    ],
)
def test_bad_provider_input_is_refused_by_the_model(body, message) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=message):
        ProviderCreate(**body)


async def test_bad_provider_config_and_duplicates_write_nothing(
    db: Database, settings: Settings
) -> None:
    t = await tenant(db)
    with pytest.raises(ValidationFailed, match="config: max_retries"):
        await add(db, settings, t.tenant_id, name="a", type="offline", config={"max_retries": -1})
    with pytest.raises(ValidationFailed, match="config: tiemout"):
        await add(db, settings, t.tenant_id, name="a", type="offline", config={"tiemout": 5})
    with pytest.raises(ValidationFailed, match="no base_url or api_key"):
        await add(db, settings, t.tenant_id, name="a", type="offline", api_key="k")
    await add(db, settings, t.tenant_id, name="a", type="offline")
    with pytest.raises(Conflict):
        await add(db, settings, t.tenant_id, name="a", type="offline")
    n = await row(db, "SELECT count(*) AS n FROM llm_providers WHERE tenant_id = %s", t.tenant_id)
    assert n["n"] == 1


async def test_builtin_provider_is_shared_and_read_only(db: Database, settings: Settings) -> None:
    t = await tenant(db)
    async with db.tenant_connection(t.tenant_id) as conn:
        providers = await service.list_providers(conn)
        assert [p.name for p in providers if p.builtin] == ["offline"]
        with pytest.raises(Conflict):
            await service.update_provider(conn, settings, "offline", ProviderUpdate(enabled=False))
        with pytest.raises(NotFound):
            await service.get_provider(conn, "nope")


async def test_other_tenants_providers_are_invisible(db: Database, settings: Settings) -> None:
    a, b = await tenant(db), await tenant(db)
    await add(db, settings, a.tenant_id, name="private", type="offline")
    async with db.tenant_connection(b.tenant_id) as conn:
        with pytest.raises(NotFound):
            await service.get_provider(conn, "private")


async def test_unhealthy_provider_gives_way_to_its_fallback(
    db: Database, llm: LLM, settings: Settings
) -> None:
    t = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        vendor.queue = [(503, {}, {"error": {"message": "down"}})] * 3
        await add(
            db,
            settings,
            t.tenant_id,
            name="primary",
            type="openai_compatible",
            api_key=KEY,
            base_url=vendor.url + "/v1",
            model="gpt-4o",
            config={"max_retries": 0, "fallback": "offline"},
        )
        ctx = CallContext(tenant_id=t.tenant_id)
        for _ in range(3):
            with pytest.raises(Exception, match="answered 503"):
                await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="primary")
        p = await row(
            db,
            "SELECT health_status FROM llm_providers WHERE name = 'primary' AND tenant_id = %s",
            t.tenant_id,
        )
        assert p["health_status"] == "unhealthy"
        out = await llm.complete(
            ctx, ChatRequest(messages=MESSAGES, model=None), provider="primary"
        )
    assert out.provider == "offline"


async def make_flaky(db: Database, llm: LLM, settings: Settings, tenant_id, vendor) -> CallContext:
    """Provider `flaky` (fallback: offline, cool-down 1 s) made unhealthy by three 503s;
    the vendor has one more 503 queued."""
    vendor.queue = [(503, {}, {"error": {"message": "down"}})] * 4
    await add(
        db,
        settings,
        tenant_id,
        name="flaky",
        type="openai_compatible",
        api_key=KEY,
        base_url=vendor.url + "/v1",
        model="gpt-4o",
        config={"max_retries": 0, "fallback": "offline", "cooldown_s": 1},
    )
    ctx = CallContext(tenant_id=tenant_id)
    for _ in range(3):
        with pytest.raises(Exception, match="answered 503"):
            await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="flaky")
    return ctx


async def test_a_failed_over_provider_is_tried_again_after_its_cool_down_and_recovers(
    db: Database, llm: LLM, settings: Settings
) -> None:
    t = await tenant(db)

    async def health() -> dict:
        return await row(
            db,
            "SELECT health_status, consecutive_failures FROM llm_providers "
            "WHERE name = 'flaky' AND tenant_id = %s",
            t.tenant_id,
        )

    with serve(OpenAIHandler) as vendor:
        ctx = await make_flaky(db, llm, settings, t.tenant_id, vendor)
        assert (await health())["health_status"] == "unhealthy"
        # Resting: calls go to the fallback without touching the vendor.
        out = await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="flaky")
        assert out.provider == "offline" and len(vendor.queue) == 1
        # After the cool-down one call tries it; the vendor still fails (the 4th 503), so
        # that call is served by the fallback and the provider rests again.
        await asyncio.sleep(1.1)
        out = await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="flaky")
        assert out.provider == "offline" and vendor.queue == []
        assert await health() == {"health_status": "unhealthy", "consecutive_failures": 4}
        out = await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="flaky")
        assert out.provider == "offline"
        # The vendor is back: the next trial succeeds and the provider is healthy again.
        await asyncio.sleep(1.1)
        out = await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="flaky")
        assert out.provider == "flaky"
        assert await health() == {"health_status": "healthy", "consecutive_failures": 0}
        out = await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="flaky")
        assert out.provider == "flaky"
    failed = await row(
        db,
        "SELECT count(*) AS n FROM llm_calls WHERE provider = 'flaky' AND status = 'failed' "
        "AND tenant_id = %s",
        t.tenant_id,
    )
    assert failed["n"] == 4  # every attempt on the vendor is recorded, the trial included


async def test_a_stream_whose_trial_fails_before_its_first_delta_falls_back(
    db: Database, llm: LLM, settings: Settings
) -> None:
    t = await tenant(db)

    async def stream() -> tuple[str, CallOutcome]:
        text, outcome = "", None
        async for item in llm.stream(ctx, ChatRequest(messages=MESSAGES), provider="flaky"):
            if isinstance(item, TextDelta):
                text += item.text
            else:
                outcome = item
        assert isinstance(outcome, CallOutcome)
        return text, outcome

    with serve(OpenAIHandler) as vendor:
        ctx = await make_flaky(db, llm, settings, t.tenant_id, vendor)
        # After the cool-down a streamed call is the trial: the vendor fails before any
        # text, so the fallback streams the answer instead of the caller getting an error.
        await asyncio.sleep(1.1)
        text, outcome = await stream()
        assert vendor.queue == [] and outcome.provider == "offline"
        assert text == outcome.result.content and text
        # The vendor is back: the next trial streams from it and heals it.
        await asyncio.sleep(1.1)
        text, outcome = await stream()
        assert outcome.provider == "flaky" and text == outcome.result.content
    calls = await row(
        db,
        "SELECT count(*) FILTER (WHERE stream AND status = 'failed' AND provider = 'flaky') AS"
        " failed, count(*) FILTER (WHERE stream AND status = 'completed') AS completed"
        " FROM llm_calls WHERE tenant_id = %s",
        t.tenant_id,
    )
    assert (calls["failed"], calls["completed"]) == (1, 2)


def test_cache_writes_are_priced_at_their_own_rate_else_as_input() -> None:
    price = {
        "input_per_mtok": Decimal("3.00"),
        "output_per_mtok": Decimal("15.00"),
        "cached_input_per_mtok": Decimal("0.30"),
        "cache_write_per_mtok": Decimal("3.75"),
    }
    result = ChatResult(
        content="",
        model="m",
        prompt_tokens=1000,
        completion_tokens=100,
        cached_tokens=200,
        cache_write_tokens=500,
    )
    expected = (
        300 * Decimal("3.00")
        + 200 * Decimal("0.30")
        + 500 * Decimal("3.75")
        + 100 * Decimal("15.00")
    ) / 1_000_000
    assert cost_of(result, price) == (expected, "price")
    # No cache-write price (OpenAI bills none): written tokens cost the input rate.
    plain = (800 * Decimal("3.00") + 200 * Decimal("0.30") + 100 * Decimal("15.00")) / 1_000_000
    assert cost_of(result, {**price, "cache_write_per_mtok": None}) == (plain, "price")


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_prompt_cache_writes_are_recorded_and_priced(
    db: Database, llm: LLM, settings: Settings, stream: bool
) -> None:
    t = await tenant(db)
    with serve(AnthropicHandler) as vendor:
        vendor.cached_tokens, vendor.cache_write_tokens = 2, 3
        await add(
            db,
            settings,
            t.tenant_id,
            name="anthropic",
            type="anthropic",
            base_url=vendor.url,
            api_key=KEY,
            model="claude-sonnet-4-0",
        )
        ctx = CallContext(tenant_id=t.tenant_id)
        request = ChatRequest(messages=MESSAGES, max_tokens=64)
        if stream:
            items = [i async for i in llm.stream(ctx, request, provider="anthropic")]
            out = items[-1]
        else:
            out = await llm.complete(ctx, request, provider="anthropic")
    r = out.result
    assert (r.cached_tokens, r.cache_write_tokens) == (2, 3)
    expected = (
        (r.prompt_tokens - 5) * Decimal("3.00")  # the built-in claude-sonnet-4-0 price
        + 2 * Decimal("0.30")
        + 3 * Decimal("3.75")
        + r.completion_tokens * Decimal("15.00")
    ) / 1_000_000
    assert out.cost_usd == expected.quantize(Decimal("1e-10"))
    call = await row(db, "SELECT * FROM llm_calls WHERE id = %s", out.call_id)
    assert (call["cached_tokens"], call["cache_write_tokens"]) == (2, 3)
    assert call["cost_usd"] == out.cost_usd
    usage = await row(db, "SELECT cost_usd FROM usage_records WHERE llm_call_id = %s", out.call_id)
    assert usage["cost_usd"] == out.cost_usd


async def test_a_call_records_its_latency_and_health_on_the_provider(
    db: Database, llm: LLM, settings: Settings
) -> None:
    t = await tenant(db)
    with serve(OpenAIHandler) as vendor:
        vendor.delay = 0.15
        await add(
            db,
            settings,
            t.tenant_id,
            name="slow",
            type="openai_compatible",
            base_url=vendor.url + "/v1",
            api_key=KEY,
            model="gpt-4o",
        )
        out = await llm.complete(
            CallContext(tenant_id=t.tenant_id), ChatRequest(messages=MESSAGES), provider="slow"
        )
    p = await row(
        db,
        "SELECT health_status, response_time, last_checked_at FROM llm_providers "
        "WHERE tenant_id = %s AND name = 'slow'",
        t.tenant_id,
    )
    assert p["health_status"] == "healthy" and p["last_checked_at"] is not None
    assert p["response_time"] == out.latency_ms >= 150


async def test_the_call_and_its_usage_record_carry_who_and_what_for(db: Database, llm: LLM) -> None:
    import uuid

    from tests.llm.helpers import session

    t = await tenant(db)
    sid = await session(db, t.tenant_id, budget=10**6)
    run, task, execution, agent = (uuid.uuid4() for _ in range(4))
    ctx = CallContext(
        tenant_id=t.tenant_id,
        user_id=t.user_id,
        api_key_id=t.api_key_id,
        session_id=sid,
        run_id=run,
        task_id=task,
        agent_execution_id=execution,
        agent_id=agent,
    )
    before = datetime.now(UTC)
    out = await llm.complete(ctx, ChatRequest(messages=MESSAGES, max_tokens=8, temperature=0.2))
    call = await row(db, "SELECT * FROM llm_calls WHERE id = %s", out.call_id)
    ids = (t.user_id, t.api_key_id, sid, run, task, agent)
    columns = ("user_id", "api_key_id", "session_id", "run_id", "task_id", "agent_id")
    assert tuple(call[c] for c in columns) == ids
    assert call["agent_execution_id"] == execution and call["provider"] == "offline"
    assert call["request"]["params"] == {"max_tokens": 8, "temperature": 0.2}
    assert call["finish_reason"] == "length" and call["latency_ms"] >= 0
    assert call["ttft_ms"] is not None and call["error"] is None
    usage = await row(db, "SELECT * FROM usage_records WHERE llm_call_id = %s", out.call_id)
    assert tuple(usage[c] for c in columns) == ids
    assert (usage["provider"], usage["model"]) == ("offline", "offline-1")
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (
        call["prompt_tokens"],
        call["completion_tokens"],
    )
    assert usage["cost_usd"] == call["cost_usd"] == 0 and before <= usage["created_at"]
    s = await row(db, "SELECT tokens_used, request_count FROM sessions WHERE id = %s", sid)
    assert s == {"tokens_used": call["total_tokens"], "request_count": 1}


class NulHandler(OpenAIHandler):
    """A vendor whose model writes a NUL character."""

    def answer(self, body):
        _, calls, finish, usage = super().answer(body)
        return "before\x00after", calls, finish, usage


async def test_a_nul_in_an_answer_is_recorded_as_a_replacement_character(
    db: Database, llm: LLM, settings: Settings
) -> None:
    """PostgreSQL holds no NUL: the answer keeps its place as U+FFFD, and the call is
    recorded, streamed or not."""
    t = await tenant(db)
    with serve(NulHandler) as vendor:
        await add(
            db,
            settings,
            t.tenant_id,
            name="nul",
            type="openai_compatible",
            base_url=vendor.url + "/v1",
            api_key=KEY,
            model="gpt-4o",
        )
        ctx = CallContext(tenant_id=t.tenant_id)
        out = await llm.complete(ctx, ChatRequest(messages=MESSAGES), provider="nul")
        streamed = [
            item async for item in llm.stream(ctx, ChatRequest(messages=MESSAGES), provider="nul")
        ]
    assert out.result.content == "before\ufffdafter"
    assert isinstance(streamed[-1], CallOutcome)
    for call_id in (out.call_id, streamed[-1].call_id):
        call = await row(
            db, "SELECT status, response_content FROM llm_calls WHERE id = %s", call_id
        )
        assert call == {"status": "completed", "response_content": "before\ufffdafter"}
