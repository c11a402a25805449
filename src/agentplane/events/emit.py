"""Writing a run's events from the code that changes the run (workflows' controls, the
runtime's executor): `event(...)` makes one, `emit(conn, ...)` appends them in the
caller's transaction, so events commit with the state they describe."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from agentplane.db.pool import Connection
from agentplane.events.models import NewEvent
from agentplane.events.service import MAX_BATCH, append


def event(
    type_: str,
    *,
    task_id: UUID | None = None,
    agent: str | None = None,
    message: str | None = None,
    **payload: Any,
) -> dict[str, Any]:
    return {
        "type": type_,
        "task_id": task_id,
        "agent": agent,
        "message": message,
        "payload": _plain(payload),
    }


_SCALARS = (str, int, float, bool, type(None))


def _plain(value: Any) -> Any:
    """The value as JSON would give it back: UUIDs, Decimals and times become strings
    (the log stores JSON). A dump and a load per event cost more than this walk."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


async def emit(
    conn: Connection, tenant_id: UUID, run_id: UUID, events: list[dict[str, Any]]
) -> None:
    if not events:
        return
    # Built here from constant types and checked values: validating them again per
    # event would cost more than writing them.
    items = [NewEvent.model_construct(**e) for e in events]
    for start in range(0, len(items), MAX_BATCH):
        await append(
            conn, tenant_id=tenant_id, run_id=run_id, events=items[start : start + MAX_BATCH]
        )
