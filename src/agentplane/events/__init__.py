"""Event log: per-run numbered, append-only events; history, live streams, replay.

Writers call `append(conn, tenant_id=..., run_id=..., events=[NewEvent(...)])` inside
the transaction whose state change the events describe.
"""

from agentplane.events.models import Event, NewEvent
from agentplane.events.service import append

__all__ = ["Event", "NewEvent", "append"]
