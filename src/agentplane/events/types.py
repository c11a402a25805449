"""The event types: documented, stable names. New types may be added; none is renamed.

Names are `<subject>.<what happened>`, lower case. The README lists them with their
payloads; the database checks only the shape of a name, so extensions need no migration.
"""

from __future__ import annotations

from typing import Final

RUN_STARTED: Final = "run.started"
RUN_COMPLETED: Final = "run.completed"
RUN_FAILED: Final = "run.failed"
RUN_CANCELLED: Final = "run.cancelled"
RUN_PAUSED: Final = "run.paused"
RUN_RESUMED: Final = "run.resumed"

TASK_STARTED: Final = "task.started"
TASK_COMPLETED: Final = "task.completed"
TASK_FAILED: Final = "task.failed"
TASK_RETRYING: Final = "task.retrying"

AGENT_STATE_CHANGED: Final = "agent.state_changed"
AGENT_THINKING: Final = "agent.thinking"
AGENT_OUTPUT: Final = "agent.output"

LLM_CALL_STARTED: Final = "llm.call_started"
LLM_CALL_COMPLETED: Final = "llm.call_completed"
LLM_DELTA: Final = "llm.delta"

TOOL_CALLED: Final = "tool.called"
TOOL_COMPLETED: Final = "tool.completed"

INPUT_REQUESTED: Final = "input.requested"
INPUT_ANSWERED: Final = "input.answered"

MESSAGE_SENT: Final = "message.sent"
MESSAGE_RECEIVED: Final = "message.received"

BUDGET_WARNING: Final = "budget.warning"
BUDGET_EXCEEDED: Final = "budget.exceeded"

ALL: Final[frozenset[str]] = frozenset(
    {
        RUN_STARTED, RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED, RUN_PAUSED, RUN_RESUMED,
        TASK_STARTED, TASK_COMPLETED, TASK_FAILED, TASK_RETRYING,
        AGENT_STATE_CHANGED, AGENT_THINKING, AGENT_OUTPUT,
        LLM_CALL_STARTED, LLM_CALL_COMPLETED, LLM_DELTA,
        TOOL_CALLED, TOOL_COMPLETED,
        INPUT_REQUESTED, INPUT_ANSWERED,
        MESSAGE_SENT, MESSAGE_RECEIVED,
        BUDGET_WARNING, BUDGET_EXCEEDED,
    }
)  # fmt: skip

# A run's last event: a stream of the run ends after it.
TERMINAL: Final[frozenset[str]] = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})

# Run-level events: what the tenant-wide stream (dashboards) carries.
RUN_LEVEL_PREFIX: Final = "run."
