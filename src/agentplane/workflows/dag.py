"""Workflow definitions: parsing (YAML or JSON), validation, templates.

A definition is a mapping of task nodes::

    name: code-review
    inputs:
      file: {required: true, description: the code to review}
    tasks:
      review:
        agent: akira-001
        instruction: "Review this code:\\n{{ inputs.file }}"
      tests:
        agent: yuki-002
        instruction: "Write tests. The review said: {{ tasks.review.output }}"
        depends_on: [review]        # implied by the reference above anyway
        retry: {max_retries: 2, delay_s: 1}
        timeout_s: 120

Saving validates everything that can be known before a run: unknown agents, inputs
a template uses but the workflow does not declare, references to tasks that do not
exist, bad templates, and cycles (the error names the cycle).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentplane.errors import ValidationFailed

NODE = r"^[a-z0-9][a-z0-9_-]{0,99}$"
TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
REFERENCE = re.compile(
    r"^\s*(?:inputs\.(?P<input>[A-Za-z_][A-Za-z0-9_]*)"
    r"|tasks\.(?P<task>[a-z0-9][a-z0-9_-]*)\.output"
    r"|run_data\.(?P<data>[A-Za-z0-9_.:/-]+))\s*$"
)
MAX_NODES = 1000


class InputSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    required: bool = True
    description: str | None = None
    default: Any = None


class RetrySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(default=0, ge=0, le=100)
    delay_s: float = Field(default=1.0, ge=0, le=3600)


class NodeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str = Field(min_length=1, max_length=50)
    instruction: str = Field(min_length=1, max_length=100_000)
    depends_on: list[str] = Field(default_factory=list)
    dependency_type: str = Field(default="finish_to_start", pattern="^finish_to_start$")
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_s: float = Field(default=300, gt=0, le=86400)


class Definition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, pattern=NODE)
    description: str | None = Field(default=None, max_length=10_000)
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    tasks: dict[str, NodeSpec] = Field(min_length=1, max_length=MAX_NODES)


@dataclass
class Dag:
    definition: Definition
    deps: dict[str, list[str]] = field(default_factory=dict)
    """Each node's upstream nodes: declared plus implied by its template."""
    order: list[str] = field(default_factory=list)
    """A topological order."""


def parse(source: str | dict[str, Any], fmt: str | None = None) -> tuple[dict[str, Any], str]:
    """The raw mapping and its format; YAML is a superset of JSON, so JSON parses too."""
    if isinstance(source, dict):
        return source, "json"
    text = source.strip()
    if not text:
        raise ValidationFailed("the workflow definition is empty")
    fmt = fmt or ("json" if text.startswith("{") else "yaml")
    try:
        data = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0]
        raise ValidationFailed(
            f"the workflow definition is not valid {fmt.upper()}: {first}"
        ) from None
    if not isinstance(data, dict):
        raise ValidationFailed("the workflow definition must be a mapping with a `tasks` key")
    return data, fmt


def validate(data: dict[str, Any], known_agents: set[str]) -> Dag:
    try:
        definition = Definition.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'definition'}: {e['msg']}"
            for e in exc.errors()
        )
        raise ValidationFailed(f"invalid workflow definition: {problems}") from None
    errors: list[str] = []
    deps: dict[str, list[str]] = {}
    for name, node in definition.tasks.items():
        if not re.match(NODE, name):
            errors.append(f"task name {name!r} must be lower-case letters, digits, - or _")
        if node.agent not in known_agents:
            errors.append(f"task {name}: unknown agent {node.agent}")
        upstream = list(dict.fromkeys(node.depends_on))
        try:
            refs = references(node.instruction)
        except ValueError as exc:
            errors.append(f"task {name}: bad template: {exc}")
            refs = []
        for kind, value in refs:
            if kind == "input" and value not in definition.inputs:
                errors.append(
                    f"task {name}: missing input {value!r} (the template uses it; "
                    "declare it under `inputs`)"
                )
            elif kind == "task" and value not in upstream:
                upstream.append(value)
        for dep in upstream:
            if dep not in definition.tasks:
                errors.append(f"task {name}: depends on unknown task {dep}")
            elif dep == name:
                errors.append(f"task {name}: depends on itself")
        deps[name] = upstream
    if errors:
        raise ValidationFailed("; ".join(errors), errors=errors)
    cycle = find_cycle(deps)
    if cycle:
        path = " -> ".join(cycle)
        raise ValidationFailed(f"the workflow has a cycle: {path}", cycle=cycle)
    return Dag(definition, deps, topological(deps))


def references(template: str) -> list[tuple[str, str]]:
    """The {{ ... }} references of a template; ValueError names a bad one."""
    if template.count("{{") != template.count("}}"):
        raise ValueError("unbalanced {{ }}")
    out = []
    for match in TEMPLATE.finditer(template):
        ref = REFERENCE.match(match.group(1))
        if ref is None:
            raise ValueError(
                f"{{{{{match.group(1)}}}}} is not one of inputs.NAME, tasks.NAME.output, "
                "run_data.KEY"
            )
        kind = next(k for k in ("input", "task", "data") if ref.group(k))
        out.append((kind, ref.group(kind)))
    return out


def render(
    template: str, inputs: dict[str, Any], outputs: dict[str, str], run_data: dict[str, Any]
) -> str:
    def value(match: re.Match[str]) -> str:
        ref = REFERENCE.match(match.group(1))
        if ref is None:
            return match.group(0)
        if ref.group("input"):
            found = inputs.get(ref.group("input"), "")
        elif ref.group("task"):
            found = outputs.get(ref.group("task"), "")
        else:
            found = run_data.get(ref.group("data"), "")
        return found if isinstance(found, str) else json.dumps(found)

    return TEMPLATE.sub(value, template)


def find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A cycle as a closed path (first node repeated last), or None."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(deps, white)
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        color[node] = grey
        stack.append(node)
        for dep in deps.get(node, []):
            if color.get(dep) == grey:
                start = stack.index(dep)
                # deps point upstream; print the cycle in execution order.
                return list(reversed([*stack[start:], dep]))
            if color.get(dep) == white:
                found = visit(dep)
                if found:
                    return found
        stack.pop()
        color[node] = black
        return None

    for node in sorted(deps):
        if color[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def topological(deps: dict[str, list[str]]) -> list[str]:
    order: list[str] = []
    done: set[str] = set()
    remaining = dict(deps)
    while remaining:
        ready = sorted(n for n, ups in remaining.items() if all(u in done for u in ups))
        order += ready
        done.update(ready)
        for n in ready:
            del remaining[n]
    return order


def check_inputs(definition: Definition, given: dict[str, Any]) -> dict[str, Any]:
    """The run's inputs with defaults applied; 422 naming what is missing or unknown."""
    unknown = sorted(set(given) - set(definition.inputs))
    missing = sorted(
        name
        for name, spec in definition.inputs.items()
        if spec.required and spec.default is None and given.get(name) in (None, "")
    )
    problems = []
    if missing:
        problems.append(f"missing input{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    if unknown:
        problems.append(f"unknown input{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    if problems:
        raise ValidationFailed("; ".join(problems), missing=missing, unknown=unknown)
    out = {
        name: spec.default for name, spec in definition.inputs.items() if spec.default is not None
    }
    out.update(given)
    return out
