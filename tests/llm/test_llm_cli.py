"""`agentplane providers list|add|test` as a real subprocess."""

from __future__ import annotations

from agentplane.db.pool import Database
from tests.llm.helpers import row, tenant
from tests.llm.vendors import KEY, AnthropicHandler, serve


async def test_add_list_and_test_a_provider(cli, db: Database) -> None:
    t = await tenant(db)
    with serve(AnthropicHandler) as vendor:
        r = cli(
            "providers",
            "add",
            "--tenant",
            t.slug,
            "--name",
            "claude",
            "--type",
            "anthropic",
            "--base-url",
            vendor.url,
            "--model",
            "claude-3-5-haiku-latest",
            "--api-key-stdin",
            input=KEY + "\n",
        )
        assert r.returncode == 0, r.stderr
        assert "provider claude (anthropic) added" in r.stdout
        again = cli("providers", "add", "--tenant", t.slug, "--name", "claude", "--type", "offline")
        assert again.returncode == 2 and "a provider named claude already exists" in again.stderr
        r = cli("providers", "list", "--tenant", t.slug)
        assert r.returncode == 0 and "claude" in r.stdout and "offline (built-in)" in r.stdout
        assert "set" in r.stdout and KEY not in r.stdout
        r = cli("providers", "test", "--tenant", t.slug, "claude")
        assert r.returncode == 0, r.stderr
        assert "claude claude-3-5-haiku-latest:" in r.stdout and " ms, " in r.stdout
        assert "prompt +" in r.stdout and "completion tokens, cost $" in r.stdout
    assert vendor.requests[-1]["headers"]["x-api-key"] == KEY
    calls = await row(db, "SELECT count(*) AS n FROM llm_calls WHERE tenant_id = %s", t.tenant_id)
    assert calls["n"] == 1
    r = cli("providers", "test", "--tenant", t.slug, "offline")
    assert r.returncode == 0 and "offline offline-1:" in r.stdout and "cost $0" in r.stdout


async def test_bad_input_is_one_line_and_writes_nothing(cli, db: Database) -> None:
    t = await tenant(db)
    cases = [
        (["--name", "x", "--type", "gemini"], "type"),
        (["--name", "x", "--type", "openai_compatible", "--base-url", "ftp://x"], "base_url"),
        (["--name", "x", "--type", "offline", "--config", "{not json"], "config is not JSON"),
        (["--name", "x", "--type", "offline", "--config", '{"timeout": 0}'], "config: timeout"),
    ]
    for args, message in cases:
        r = cli("providers", "add", "--tenant", t.slug, *args)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert message in r.stderr and "Traceback" not in r.stderr
    r = cli("providers", "add", "--tenant", "no-such-tenant", "--name", "x", "--type", "offline")
    assert r.returncode == 2 and "no tenant 'no-such-tenant' (tenants: " in r.stderr
    r = cli("providers", "test", "--tenant", t.slug, "missing")
    assert r.returncode == 2 and "provider missing not found" in r.stderr
    n = await row(db, "SELECT count(*) AS n FROM llm_providers WHERE tenant_id = %s", t.tenant_id)
    assert n["n"] == 0
