"""Every error is application/problem+json with a stable type; every response has a request id."""

from __future__ import annotations

import httpx
import psycopg
from fastapi import FastAPI
from pydantic import BaseModel, Field

from agentplane.app import create_app
from agentplane.db import endpoints as ep
from agentplane.db.migrate import head
from agentplane.db.pool import Database
from agentplane.errors import PROBLEM_BASE, Conflict
from tests.conftest import create_database, drop_database, make_settings

PROBLEM = "application/problem+json"


def assert_problem(r: httpx.Response, status: int, type_: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body = r.json()
    assert body["type"] == PROBLEM_BASE + type_
    assert body["status"] == status
    assert body["title"] and body["detail"]
    return body


async def test_unknown_route_is_a_404_problem(client: httpx.AsyncClient) -> None:
    body = assert_problem(await client.get("/no/such/thing"), 404, "not-found")
    assert body["instance"] == "/no/such/thing"


async def test_wrong_method_is_a_405_problem(client: httpx.AsyncClient) -> None:
    assert_problem(await client.post("/health"), 405, "method-not-allowed")


async def test_request_id_is_echoed(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"


async def test_request_id_is_generated_when_missing_or_unsafe(client: httpx.AsyncClient) -> None:
    plain = await client.get("/health")
    assert len(plain.headers["x-request-id"]) == 32
    unsafe = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"] != "bad id\twith spaces"
    assert len(unsafe.headers["x-request-id"]) == 32


class Thing(BaseModel):
    name: str = Field(min_length=1)
    size: int = Field(ge=0)


def app_with_failing_routes(settings, db) -> FastAPI:
    app = create_app(settings, db=db)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/taken")
    async def taken() -> None:
        raise Conflict("slug already exists")

    @app.post("/things")
    async def things(thing: Thing) -> Thing:
        return thing

    return app


async def test_errors_render_as_problems(settings, db) -> None:
    app = app_with_failing_routes(settings, db)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        crash = await c.get("/boom")
        body = assert_problem(crash, 500, "internal-error")
        assert "secret internals" not in crash.text and "Traceback" not in crash.text

        assert_problem(await c.get("/taken"), 409, "conflict")

        invalid = await c.post("/things", json={"name": "", "size": -1})
        body = assert_problem(invalid, 422, "validation-failed")
        assert {e["field"] for e in body["errors"]} == {"name", "size"}

        malformed = await c.post("/things", content=b"{not json",
                                 headers={"content-type": "application/json"})
        assert_problem(malformed, 422, "validation-failed")


async def test_ready_is_503_when_migrations_are_behind(client, endpoints) -> None:
    with psycopg.connect(endpoints.owner, autocommit=True) as conn:
        conn.execute("UPDATE alembic_version SET version_num = '0001'")
        try:
            r = await client.get("/ready")
        finally:
            conn.execute("UPDATE alembic_version SET version_num = %s", [head()])
    body = assert_problem(r, 503, "schema-mismatch")
    assert body["expected"] == head()
    assert (await client.get("/ready")).status_code == 200


async def test_ready_is_503_when_the_database_is_gone(settings, endpoints, pg_server) -> None:
    """/health answers while the process lives; /ready only while its database does."""
    name = "t_ready_gone"
    create_database(pg_server, name)
    conf = make_settings(settings.home, settings.embedded_port, name, pool_min_size=1)
    own = Database(conf, ep.resolve(conf, start=False))
    await own.open()
    try:
        transport = httpx.ASGITransport(app=create_app(conf, db=own))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get("/ready")).status_code == 200
            drop_database(pg_server, name)  # terminates the pool's connections
            body = assert_problem(await c.get("/ready"), 503, "database-unavailable")
            assert "Traceback" not in body["detail"]
            assert (await c.get("/health")).status_code == 200
    finally:
        await own.close()
        drop_database(pg_server, name)
