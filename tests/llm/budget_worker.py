"""The second process of the cross-process budget test: N concurrent calls on one
session, started when the parent writes a line; prints how many were admitted."""

from __future__ import annotations

import asyncio
import json
import sys
from uuid import UUID

from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.pool import Database
from agentplane.errors import BudgetExceeded
from agentplane.llm.adapters.base import ChatRequest
from agentplane.llm.calls import LLM
from agentplane.llm.context import CallContext


async def main(tenant_id: str, session_id: str, n: int, max_tokens: int, messages: str) -> None:
    settings = Settings()
    db = Database(settings, ep.resolve(settings, start=False))
    await db.open()
    llm = LLM(db, settings)
    ctx = CallContext(tenant_id=UUID(tenant_id), session_id=UUID(session_id))
    request = ChatRequest(messages=json.loads(messages), max_tokens=max_tokens)
    print("ready", flush=True)
    sys.stdin.readline()

    async def one() -> str:
        try:
            await llm.complete(ctx, request)
            return "ok"
        except BudgetExceeded:
            return "refused"

    results = await asyncio.gather(*(one() for _ in range(n)))
    await db.close()
    print(json.dumps({"ok": results.count("ok"), "refused": results.count("refused")}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]))
