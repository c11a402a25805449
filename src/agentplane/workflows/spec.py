"""The workflow definition as pydantic models: what a YAML or JSON document may say.

These models are the published format: `agentplane workflows schema` prints their JSON
Schema and the OpenAPI of `POST /v1/workflows` shows them. Checks a schema cannot state
(known agents, declared inputs, templates, cycles) are in `dag`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

NODE = r"^[a-z0-9][a-z0-9_-]{0,99}$"
MAX_NODES = 1000
TEMPLATES = (
    "Templates: {{ inputs.NAME }} (a declared input), {{ tasks.NAME.output }} (an upstream "
    "task's output; implies depends_on), {{ run_data.KEY }} (a fact shared in the run)."
)


class InputSpec(BaseModel):
    """An input of the workflow, given when a run starts (`--input NAME=VALUE`)."""

    model_config = ConfigDict(extra="forbid")

    required: bool = Field(default=True, description="A run without it is refused (422).")
    description: str | None = Field(default=None, description="What to give.")
    default: Any = Field(default=None, description="The value when a run does not give one.")


class RetrySpec(BaseModel):
    """How often a failed task runs again before the run fails."""

    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(default=0, ge=0, le=100, description="Attempts after the first.")
    delay_s: float = Field(default=1.0, ge=0, le=3600, description="Seconds between attempts.")


class TaskSpec(BaseModel):
    """One task: an agent given an instruction, after the tasks it depends on."""

    model_config = ConfigDict(extra="forbid")

    agent: str = Field(
        min_length=1, max_length=50, description="The id (slug) of an agent of the tenant."
    )
    instruction: str = Field(
        min_length=1, max_length=100_000, description="What the agent is asked. " + TEMPLATES
    )
    depends_on: list[str] = Field(
        default_factory=list, description="Tasks that must complete first (fan-in)."
    )
    dependency_type: str = Field(
        default="finish_to_start", pattern="^finish_to_start$", description="Only finish_to_start."
    )
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_s: float = Field(
        default=300, gt=0, le=86400, description="Seconds one attempt may take."
    )


class WorkflowDefinition(BaseModel):
    """A workflow: named tasks forming a DAG, with the inputs their templates use."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, pattern=NODE, description="Lower-case letters, digits, - and _."
    )
    description: str | None = Field(default=None, max_length=10_000)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    tasks: dict[str, TaskSpec] = Field(
        min_length=1,
        max_length=MAX_NODES,
        description="Tasks by name (lower-case letters, digits, - and _).",
    )


FIELDS = {
    "definition": WorkflowDefinition,
    "task": TaskSpec,
    "input": InputSpec,
    "retry": RetrySpec,
}
# Names people reach for, and the field that means it here.
SYNONYMS = {
    "prompt": "instruction",
    "instructions": "instruction",
    "depends": "depends_on",
    "needs": "depends_on",
    "after": "depends_on",
    "retries": "retry",
    "max_retries": "retry: {max_retries: N}",
    "timeout": "timeout_s",
}


def json_schema() -> dict[str, Any]:
    schema = WorkflowDefinition.model_json_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "agentplane workflow definition",
        **{k: v for k, v in schema.items() if k != "title"},
    }
