"""Bad input through the openai SDK: each refusal in OpenAI's error shape, with nothing
recorded for the tenant and no budget reservation left behind."""

from __future__ import annotations

import httpx
import openai
import pytest

from agentplane.db.pool import Database
from agentplane.sessions import service as sessions
from agentplane.sessions.models import SessionCreate
from tests.gateway.helpers import NO_HOLD, gateway_tenant, reservations, rows

ASK = [{"role": "user", "content": "Hello?"}]


async def nothing_left(db: Database, tenant_id) -> None:
    assert await rows(db, "SELECT 1 FROM llm_calls WHERE tenant_id = %s", tenant_id) == []
    assert await rows(db, "SELECT 1 FROM usage_records WHERE tenant_id = %s", tenant_id) == []
    assert await reservations(db, tenant_id) == NO_HOLD


def shaped(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    return body["error"]


@pytest.mark.parametrize(
    ("kw", "error", "status", "code"),
    [
        ({"model": "nowhere/gpt-9"}, openai.NotFoundError, 404, "model_not_found"),
        ({"messages": [{"role": "user"}]}, openai.BadRequestError, 400, None),
        ({"tools": [{"type": "function", "function": {"name": "f",
                                                      "parameters": {"type": 7}}}]},
         openai.BadRequestError, 400, None),
        ({"n": 2}, openai.BadRequestError, 400, None),
        ({"max_tokens": 40000}, openai.BadRequestError, 400, "integer_above_max_value"),
    ],
)
async def test_refused_requests_record_and_reserve_nothing(
    db: Database, url: str, kw, error, status, code
) -> None:
    t = await gateway_tenant(db)
    body = {"model": "offline", "messages": ASK, **kw}
    with openai.OpenAI(base_url=url + "/v1", api_key=t.api_key, max_retries=0) as sdk, \
            pytest.raises(error) as info:
        sdk.chat.completions.create(**body)
    assert info.value.status_code == status
    if code:
        assert shaped(info.value)["code"] == code
    else:
        shaped(info.value)
    await nothing_left(db, t.tenant_id)


async def test_a_key_without_llm_invoke_is_a_403(db: Database, url: str) -> None:
    t = await gateway_tenant(db, scopes=["llm:read"])
    with openai.OpenAI(base_url=url + "/v1", api_key=t.api_key, max_retries=0) as sdk, \
            pytest.raises(openai.PermissionDeniedError) as info:
        sdk.chat.completions.create(model="offline", messages=ASK)
    assert shaped(info.value)["type"] == "permission_error"
    await nothing_left(db, t.tenant_id)


async def test_another_tenants_session_is_a_404(db: Database, url: str) -> None:
    t, other = await gateway_tenant(db), await gateway_tenant(db)
    async with db.tenant_connection(other.tenant_id) as conn:
        theirs = await sessions.create(conn, other.user_id, SessionCreate(token_budget=10_000))
    with openai.OpenAI(base_url=url + "/v1", api_key=t.api_key, max_retries=0) as sdk, \
            pytest.raises(openai.NotFoundError) as info:
        sdk.chat.completions.create(model="offline", messages=ASK,
                                    extra_headers={"x-agentplane-session": str(theirs.id)})
    assert shaped(info.value)["code"] == "session_not_found"
    await nothing_left(db, t.tenant_id)
    await nothing_left(db, other.tenant_id)


async def test_a_20_mb_body_is_a_413(db: Database, url: str) -> None:
    """Sent in chunks with its Content-Length: the gateway refuses it by its length (the
    app's body limit, api/middleware.py), without parsing it."""
    t = await gateway_tenant(db)

    async def body():
        yield b'{"model": "offline", "messages": [{"role": "user", "content": "'
        for _ in range(20 * 1024):
            yield b"x" * 1024
        yield b'"}]}'

    size = 20 * 1024 * 1024 + len(b'{"model": "offline", "messages": [{"role": "user", '
                                   b'"content": ""}]}')
    headers = {"Authorization": f"Bearer {t.api_key}", "Content-Type": "application/json",
               "Content-Length": str(size)}
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        r = await http.post("/v1/chat/completions", content=body(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    await nothing_left(db, t.tenant_id)
