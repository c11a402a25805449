"""What the CLI prints from data is printed as it is: square brackets in a message (a
validation pattern, a name) are not taken for Rich markup; money is written plainly."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import httpx

from agentplane.db.pool import Database
from agentplane.money import plain
from tests.conftest import make_tenant
from tests.usage.helpers import insert_records, record


def test_an_error_with_square_brackets_prints_them(cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: '[Bad] Name'\ntasks:\n  a:\n    agent: nobody\n    prompt: hi\n")
    made = cli("tenant", "create", "B", "--slug", "brackets", "--owner-email", "o@b.test")
    assert made.returncode == 0, made.stderr
    r = cli("workflows", "save", str(bad), AGENTPLANE_TENANT="brackets")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "pattern '^[a-z0-9][a-z0-9_-]{0,99}$'" in r.stderr, r.stderr


def test_money_is_written_plainly() -> None:
    assert [plain(Decimal(x)) for x in ("0E-10", "0.2500000000", "1E+2", "12.5")] == [
        "0", "0.25", "100", "12.5"]


async def test_a_zero_cost_is_0_not_0e10(db: Database, client: httpx.AsyncClient, now) -> None:
    ctx = await make_tenant(db)
    async with db.tenant_connection(ctx.tenant_id) as conn:
        await insert_records(conn, [record(at=now, model="free", cost=Decimal("0")),
                                    record(at=now, model="paid", cost=Decimal("0.25"))])
    r = await client.get("/v1/usage", params={"by": "model", "since": "2d"}, headers=ctx.headers)
    assert r.status_code == 200, r.text
    costs = {row["key"]: row["cost_usd"] for row in r.json()["rows"]}
    assert costs == {"openai/free": "0", "openai/paid": "0.25"}
