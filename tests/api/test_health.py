import httpx


async def test_health_is_ok(client: httpx.AsyncClient) -> None:
    r = await client.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_ready_reports_migration_head(client: httpx.AsyncClient) -> None:
    from agentplane.db.migrate import head

    r = await client.get("/ready")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "migration": head()}
