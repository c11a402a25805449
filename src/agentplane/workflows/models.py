"""Pydantic types of workflows, runs, tasks, run data and input requests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, SkipValidation, model_validator

from agentplane.money import Money, known_cost
from agentplane.workflows.spec import WorkflowDefinition

RunStatus = Literal["pending", "running", "paused", "completed", "failed", "cancelled"]
TaskStatus = Literal["pending", "queued", "running", "waiting", "completed", "failed", "cancelled"]
Mode = Literal["SIMPLE", "STANDARD", "COMPLEX"]
TERMINAL = ("completed", "failed", "cancelled")


class WorkflowIn(BaseModel):
    """A definition as YAML or JSON text (`source`), or as a JSON object (`definition`)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,99}$")
    description: str | None = Field(default=None, max_length=10_000)
    source: str | None = Field(default=None, max_length=1_000_000)
    format: Literal["yaml", "json"] | None = None
    # Shown as its schema, checked when saved: one response then lists every problem.
    definition: SkipValidation[WorkflowDefinition] | None = None

    @model_validator(mode="after")
    def _one_of(self) -> WorkflowIn:
        if (self.source is None) == (self.definition is None):
            raise ValueError("give exactly one of source (YAML/JSON text) or definition")
        return self


class Workflow(BaseModel):
    id: UUID
    name: str
    description: str | None
    version: int
    latest_version: int
    format: str
    definition: dict[str, Any]
    source: str
    created_at: datetime
    updated_at: datetime


class WorkflowVersion(BaseModel):
    version: int
    format: str
    created_at: datetime


class RunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workflow: str | None = Field(default=None, description="a workflow's name or id")
    version: int | None = Field(default=None, ge=1)
    inputs: dict[str, Any] = Field(default_factory=dict)
    query: str | None = Field(default=None, min_length=1, max_length=100_000)
    mode: Mode = "SIMPLE"
    agent: str | None = Field(default=None, description="the agent of a query run")
    model: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="provider/model every task of the run uses instead of its agent's",
    )
    session_id: UUID | None = None
    parent_run_id: UUID | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_of(self) -> RunIn:
        if (self.workflow is None) == (self.query is None):
            raise ValueError("give exactly one of workflow or query")
        return self


class Run(BaseModel):
    id: UUID
    kind: str
    workflow_id: UUID | None
    workflow_name: str | None = None
    workflow_version: int | None
    mode: str | None
    query: str | None
    model: str | None = None
    """The model every task uses instead of its agent's (none: each agent's own)."""
    inputs: dict[str, Any]
    status: RunStatus
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    total_cost_usd: Money | None
    """The cost of its priced calls; null when no call was priced and some were not."""
    unpriced_calls: int = 0
    """Calls whose model has no price: their cost is unknown and not in total_cost_usd."""
    cost_complete: bool = True
    """False when unpriced calls make total_cost_usd a lower bound (or unknown)."""
    duration_ms: int | None
    agents_used: int
    tools_invoked: int
    cache_hits: int
    complexity_score: Decimal | None
    result: str | None
    response: dict[str, Any]
    error: str | None
    parent_run_id: UUID | None
    call_stack: list[str]
    session_id: UUID | None
    user_id: UUID | None
    pending_input_requests: int = 0
    metadata: dict[str, Any]
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @model_validator(mode="after")
    def _honest_cost(self) -> Run:
        self.cost_complete = self.unpriced_calls == 0
        self.total_cost_usd = known_cost(self.total_cost_usd, self.unpriced_calls)
        return self


class RunPage(BaseModel):
    items: list[Run]
    next_cursor: str | None = None


class Task(BaseModel):
    id: UUID
    node: str
    agent: str
    parent_task_id: UUID | None
    status: TaskStatus
    instruction: str
    output: dict[str, Any] | None
    error: str | None
    retry_count: int
    max_retries: int
    timeout_s: float | None
    deadline_at: datetime | None
    depends_on: list[UUID] = Field(default_factory=list)
    prompt_tokens: int
    completion_tokens: int
    tokens_used: int
    cost_usd: Money
    created_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None


class InputRequest(BaseModel):
    id: UUID
    run_id: UUID
    task_id: UUID
    request_type: str
    prompt: str
    schema_: dict[str, Any] = Field(alias="schema", serialization_alias="schema")
    status: str
    response: Any = None
    responded_by: UUID | None
    requested_at: datetime
    responded_at: datetime | None

    model_config = ConfigDict(populate_by_name=True)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")

    response: Any


class RunDataIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(pattern=r"^[A-Za-z0-9_.:/-]{1,255}$")
    value: Any
    data_type: str = Field(default="json", max_length=50)
    tags: list[str] = Field(default_factory=list)


class RunTree(BaseModel):
    """A run and everything under it, as one response."""

    run: Run
    tasks: list[dict[str, Any]]
    input_requests: list[dict[str, Any]]
    interactions: list[dict[str, Any]]
    run_data: list[dict[str, Any]]


class RunCall(BaseModel):
    """One LLM or tool call of a run, without its body (a row of the waterfall)."""

    kind: Literal["llm", "tool"]
    id: UUID
    task_id: UUID | None
    agent_execution_id: UUID | None
    created_at: datetime
    duration_ms: int | None
    name: str
    """provider/model of an LLM call; the tool's name."""
    status: str
    error: str | None
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Money | None
    task_node: str | None = None
    """The name of the call's task in the run."""


class CallPage(BaseModel):
    items: list[RunCall]
    next_cursor: str | None = None


class ToolExecution(BaseModel):
    id: UUID
    run_id: UUID
    task_id: UUID
    agent_execution_id: UUID
    tool_name: str
    call_id: str | None
    input_params: dict[str, Any]
    output: str | None
    success: bool
    error: str | None
    duration_ms: int | None
    created_at: datetime
