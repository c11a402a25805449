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

The fields are the models of `spec` (published as JSON Schema). Saving validates
everything that can be known before a run, and reports all of it at once: the schema's
errors, unknown agents, inputs a template uses but the workflow does not declare,
references to tasks that do not exist, bad templates (`{topic}` with single braces
too), and cycles (the error names the cycle).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from pydantic import ValidationError

from agentplane.errors import ValidationFailed
from agentplane.workflows.spec import FIELDS, NODE, SYNONYMS, WorkflowDefinition

# A template's content cannot hold another "{{": an unclosed one stays visible.
TEMPLATE = re.compile(r"\{\{((?:(?!\{\{).)*?)\}\}", re.DOTALL)
REFERENCE = re.compile(
    r"^\s*(?:inputs\.(?P<input>[A-Za-z_][A-Za-z0-9_]*)"
    r"|tasks\.(?P<task>[a-z0-9][a-z0-9_-]*)\.output"
    r"|run_data\.(?P<data>[A-Za-z0-9_.:/-]+))\s*$"
)
# `{topic}` or `{tasks.a.output}`: a template written with single braces.
SINGLE = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*)\s*\}")
SHOWN = 200
Problem = dict[str, Any]


@dataclass
class Dag:
    definition: WorkflowDefinition
    deps: dict[str, list[str]] = field(default_factory=dict)
    """Each node's upstream nodes: declared plus implied by its template."""
    order: list[str] = field(default_factory=list)
    """A topological order."""


def problem(field: str, value: Any, message: str, **extra: Any) -> Problem:
    """One thing wrong, in the document's terms: where, what was given, what to do."""
    return {"field": field, "value": shown(value), "message": message, **extra}


def shown(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= SHOWN else value[:SHOWN] + "..."
    text = json.dumps(value, default=str)
    return value if len(text) <= SHOWN else text[:SHOWN] + "..."


class _UniqueKeys(yaml.SafeLoader):
    """YAML whose mappings refuse a key given twice (PyYAML keeps the last one silently,
    which would drop a task without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    twice = next((k for k in keys if keys.count(k) > 1), None)
    if twice is not None:
        raise ValidationFailed.listing(
            [problem("source", twice, f"the key {twice!r} is given twice in one object")])
    return dict(pairs)


def parse(source: str | dict[str, Any], fmt: str | None = None) -> tuple[dict[str, Any], str]:
    """The raw mapping and its format; YAML is a superset of JSON, so JSON parses too.
    A syntax error names its line and column."""
    if isinstance(source, dict):
        return source, "json"
    text = source.strip()
    if not text:
        raise ValidationFailed.listing([problem("source", "", "the workflow definition is empty")])
    fmt = fmt or ("json" if text.startswith("{") else "yaml")
    try:
        data = (json.loads(source, object_pairs_hook=_unique_pairs) if fmt == "json"
                else yaml.load(source, Loader=_UniqueKeys))  # a SafeLoader
    except json.JSONDecodeError as exc:
        raise _syntax("JSON", exc.msg, exc.lineno, exc.colno) from None
    except yaml.MarkedYAMLError as exc:
        mark, opened = exc.problem_mark or exc.context_mark, exc.context_mark
        what = exc.problem or exc.context or str(exc)
        if exc.context and opened is not None and opened is not mark:
            # The problem is often found far from its cause: an unclosed [ or {.
            what += f" ({exc.context} that starts at line {opened.line + 1}, column " \
                    f"{opened.column + 1})"
        line, column = (mark.line + 1, mark.column + 1) if mark else (None, None)
        raise _syntax("YAML", what, line, column) from None
    except yaml.YAMLError as exc:
        raise _syntax("YAML", str(exc).splitlines()[0], None, None) from None
    if not isinstance(data, dict):
        raise ValidationFailed.listing(
            [problem("source", shown(data), "the workflow definition must be a mapping with a "
                     "`tasks` key")]
        )
    return data, fmt


def _syntax(fmt: str, what: str, line: int | None, column: int | None) -> ValidationFailed:
    where = f"line {line}, column {column}" if line else "source"
    return ValidationFailed.listing(
        [
            {
                "field": "source",
                "value": None,
                "line": line,
                "column": column,
                "message": f"not valid {fmt} at {where}: {what}",
            }
        ]
    )


def validate(data: dict[str, Any], known_agents: set[str]) -> Dag:
    """The DAG, or one 422 listing every problem of the document (the schema's and the
    graph's): a wrong field of one task does not hide an unknown agent of another."""
    errors: list[Problem] = []
    definition = None
    try:
        definition = WorkflowDefinition.model_validate(data)
    except ValidationError as exc:
        errors += [_schema_problem(e) for e in exc.errors()]
    deps, graph_errors = _graph(data, known_agents)
    errors += graph_errors
    cycle = find_cycle(deps)
    if cycle:
        errors.append(
            problem("tasks", cycle, f"the workflow has a cycle: {' -> '.join(cycle)}")
        )
    if errors:
        raise ValidationFailed.listing(_in_document_order(errors, data), cycle=cycle)
    assert definition is not None
    return Dag(definition, deps, topological(deps))


def _schema_problem(err: Any) -> Problem:
    loc = [str(p) for p in err["loc"]]
    where = ".".join(loc) or "definition"
    if err["type"] == "missing":
        return problem(where, None, "required, missing")
    if err["type"] == "extra_forbidden":
        allowed = list(FIELDS[_kind(loc)].model_fields)
        hint = SYNONYMS.get(loc[-1]) or next(
            iter(difflib.get_close_matches(loc[-1], allowed, n=1)), None
        )
        message = f"unknown field {loc[-1]!r}" + (f" (did you mean {hint}?)" if hint else "")
        return problem(where, err["input"], f"{message}; allowed: {', '.join(allowed)}")
    if loc == ["tasks"] and err["type"] == "too_short":
        return problem(where, err["input"], "a workflow needs at least one task")
    return problem(where, err["input"], err["msg"][0].lower() + err["msg"][1:])


def _kind(loc: list[str]) -> str:
    if loc[0] == "tasks" and len(loc) == 4 and loc[2] == "retry":
        return "retry"
    if loc[0] in ("tasks", "inputs") and len(loc) == 3:
        return "task" if loc[0] == "tasks" else "input"
    return "definition"


def _graph(data: dict[str, Any], known_agents: set[str]) -> tuple[dict[str, list[str]], list]:
    """Each task's upstream tasks and what is wrong with names, agents, templates and
    dependencies; read from the raw document so the schema's errors do not stop it."""
    tasks = data.get("tasks") if isinstance(data.get("tasks"), dict) else {}
    inputs = data.get("inputs") if isinstance(data.get("inputs"), dict) else {}
    errors: list[Problem] = []
    deps: dict[str, list[str]] = {}
    for name, node in tasks.items():
        at = f"tasks.{name}"
        if not re.match(NODE, str(name)):
            errors.append(problem(at, name, "a task's name is lower-case letters, digits, - or _"))
        if not isinstance(node, dict):
            continue
        agent = node.get("agent")
        if isinstance(agent, str) and agent and agent not in known_agents:
            errors.append(problem(f"{at}.agent", agent, f"unknown agent {agent!r}" + _known(
                known_agents)))
        declared = node.get("depends_on")
        # Each upstream task and the field that names it.
        upstream = {
            d: f"{at}.depends_on" for d in declared or [] if isinstance(d, str)
        } if isinstance(declared, list) else {}
        instruction = node.get("instruction")
        refs, bad = references(instruction) if isinstance(instruction, str) else ([], [])
        errors += [problem(f"{at}.instruction", value, message) for value, message in bad]
        for kind, value in refs:
            if kind == "input" and value not in inputs:
                errors.append(
                    problem(f"{at}.instruction", f"{{{{ inputs.{value} }}}}",
                            f"missing input {value!r}: the template uses it; declare it under "
                            "`inputs`")
                )
            elif kind == "task":
                upstream.setdefault(value, f"{at}.instruction")
        for dep, where in upstream.items():
            if dep not in tasks:
                errors.append(problem(where, dep, f"depends on unknown task {dep!r}"))
            elif dep == name:
                errors.append(problem(where, dep, "a task cannot depend on itself"))
        deps[name] = [d for d in upstream if d in tasks and d != name]
    return deps, errors


def _known(agents: set[str]) -> str:
    if not agents:
        return " (the tenant has no agents yet; create one with POST /v1/agents)"
    names = sorted(agents)
    more = f", ... ({len(names)} in all)" if len(names) > 10 else ""
    return f" (known: {', '.join(names[:10])}{more})"


def _in_document_order(errors: list[Problem], data: dict[str, Any]) -> list[Problem]:
    tasks = list(data.get("tasks") or {}) if isinstance(data.get("tasks"), dict) else []
    where = {f"tasks.{name}": i for i, name in enumerate(tasks, 1)}

    def key(p: Problem) -> int:
        if p["field"] == "tasks":  # the whole graph (a cycle) after its tasks
            return len(tasks) + 1
        parts = p["field"].split(".")
        return where.get(".".join(parts[:2]), 0) if parts[0] == "tasks" else 0

    return sorted(errors, key=key)


def references(template: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The template's {{ ... }} references, and every bad one as (text, message): one
    bad template does not hide the others."""
    refs: list[tuple[str, str]] = []
    bad: list[tuple[str, str]] = []
    for match in TEMPLATE.finditer(template):
        ref = REFERENCE.match(match.group(1))
        if ref is None:
            bad.append(
                (match.group(0), f"{match.group(0)} is not one of {{{{ inputs.NAME }}}}, "
                 "{{ tasks.NAME.output }}, {{ run_data.KEY }}")
            )
            continue
        kind = next(k for k in ("input", "task", "data") if ref.group(k))
        refs.append((kind, ref.group(kind)))
    rest = TEMPLATE.sub(" ", template)
    for opened in re.finditer(r"\{\{", rest):
        near = rest[opened.start() : opened.start() + 40].split("\n")[0]
        bad.append((near, f"unclosed {{{{ in {near!r}: close it with }}}}"))
    if "}}" in rest:
        bad.append(("}}", "}} without an opening {{"))
    for single in SINGLE.finditer(re.sub(r"\{\{|\}\}", "  ", rest)):
        name = single.group(1)
        fixed = name if REFERENCE.match(name) else f"inputs.{name}"
        bad.append(
            (single.group(0), f"{single.group(0)} looks like a template but has single braces; "
             f"write {{{{ {fixed} }}}}")
        )
    return refs, bad


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


def check_inputs(definition: WorkflowDefinition, given: dict[str, Any]) -> dict[str, Any]:
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
        errors = [problem(f"inputs.{n}", None, "missing input") for n in missing] + [
            problem(f"inputs.{n}", given[n], f"unknown input; declared: "
                    f"{', '.join(definition.inputs) or 'none'}")
            for n in unknown
        ]
        raise ValidationFailed("; ".join(problems), missing=missing, unknown=unknown,
                               errors=errors)
    out = {
        name: spec.default for name, spec in definition.inputs.items() if spec.default is not None
    }
    out.update(given)
    return out
