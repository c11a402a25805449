"""The one call site of the event log: events commit with the state they describe."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from agentplane.db.pool import Connection


def event(
    type_: str,
    *,
    task_id: UUID | None = None,
    agent: str | None = None,
    message: str | None = None,
    **payload: Any,
) -> dict[str, Any]:
    # UUIDs, Decimals and times become strings: the log stores JSON.
    return {
        "type": type_,
        "task_id": task_id,
        "agent": agent,
        "message": message,
        "payload": json.loads(json.dumps(payload, default=str)),
    }


async def emit(
    conn: Connection, tenant_id: UUID, run_id: UUID, events: list[dict[str, Any]]
) -> None:
    if not events:
        return
    from agentplane.events.models import NewEvent
    from agentplane.events.service import MAX_BATCH, append

    items = [NewEvent(**e) for e in events]
    for start in range(0, len(items), MAX_BATCH):
        await append(
            conn, tenant_id=tenant_id, run_id=run_id, events=items[start : start + MAX_BATCH]
        )
