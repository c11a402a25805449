"""Workflow definitions on their own (workflows/dag.py), no database: parsing YAML and
JSON, every problem validation finds (each message in the document's terms, all of them
at once, in the document's order), the dependencies and order it computes, templates and
a run's inputs."""

from __future__ import annotations

from typing import Any

import pytest

from agentplane.errors import ValidationFailed
from agentplane.workflows import dag
from agentplane.workflows.spec import WorkflowDefinition

AGENTS = {"alpha", "beta"}
TASK_FIELDS = "agent, instruction, depends_on, dependency_type, retry, timeout_s"
NOT_A_REFERENCE = "is not one of {{ inputs.NAME }}, {{ tasks.NAME.output }}, {{ run_data.KEY }}"


def task(instruction: str = "do it", agent: str = "alpha", **kw: Any) -> dict[str, Any]:
    return {"agent": agent, "instruction": instruction, **kw}


def problems(data: dict[str, Any], agents: set[str] = AGENTS) -> list[dict[str, Any]]:
    """The problems validation lists (and checks that the detail says each of them)."""
    with pytest.raises(ValidationFailed) as caught:
        dag.validate(data, agents)
    found = caught.value.extra["errors"]
    assert caught.value.status == 422
    assert caught.value.detail == "; ".join(f"{p['field']}: {p['message']}" for p in found)
    return found


def only(data: dict[str, Any], agents: set[str] = AGENTS) -> tuple[str, Any, str]:
    [p] = problems(data, agents)
    return p["field"], p["value"], p["message"]


# -- parsing ------------------------------------------------------------------------------


def test_yaml_and_json_parse_to_the_same_mapping() -> None:
    as_yaml = "tasks:\n  a: {agent: alpha, instruction: hi}\n"
    as_json = '{"tasks": {"a": {"agent": "alpha", "instruction": "hi"}}}'
    expected = {"tasks": {"a": {"agent": "alpha", "instruction": "hi"}}}
    assert dag.parse(as_yaml) == (expected, "yaml")
    assert dag.parse(as_json) == (expected, "json")  # told apart by its first character
    assert dag.parse(as_json, "yaml") == (expected, "yaml")  # YAML is a superset of JSON
    assert dag.parse(expected) == (expected, "json")  # already a mapping: as it is


@pytest.mark.parametrize(
    ("source", "fmt", "line", "column", "message"),
    [
        (
            "tasks: [unclosed",
            None,
            1,
            17,
            "not valid YAML at line 1, column 17: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence that starts at line 1, column 8)",
        ),
        ("a: b: c", None, 1, 5, "not valid YAML at line 1, column 5: mapping values are not "
         "allowed here"),
        ("tasks:\n\t- x", None, 2, 1, "not valid YAML at line 2, column 1: found character "
         "'\\t' that cannot start any token"),
        ('{"tasks": 1,}', None, 1, 13, "not valid JSON at line 1, column 13: Expecting "
         "property name enclosed in double quotes"),
        ("tasks: {}", "json", 1, 1, "not valid JSON at line 1, column 1: Expecting value"),
    ],
)
def test_a_syntax_error_names_its_line_and_column(
    source: str, fmt: str | None, line: int, column: int, message: str
) -> None:
    with pytest.raises(ValidationFailed) as caught:
        dag.parse(source, fmt)
    assert caught.value.extra["errors"] == [
        {"field": "source", "value": None, "line": line, "column": column, "message": message}
    ]
    assert caught.value.detail == f"source: {message}"


@pytest.mark.parametrize(
    ("source", "value", "message"),
    [
        ("  \n ", "", "the workflow definition is empty"),
        ("- a\n- b\n", ["a", "b"], "the workflow definition must be a mapping with a `tasks` key"),
        ("just words", "just words",
         "the workflow definition must be a mapping with a `tasks` key"),
    ],
)
def test_an_empty_or_non_mapping_document_is_refused(source: str, value: Any, message: str):
    with pytest.raises(ValidationFailed) as caught:
        dag.parse(source)
    assert caught.value.extra["errors"] == [{"field": "source", "value": value, "message": message}]


# -- the graph: dependencies and order ----------------------------------------------------


def test_dependencies_are_declared_or_implied_by_a_template_and_counted_once() -> None:
    found = dag.validate(
        {
            "inputs": {"code": {}},
            "tasks": {
                "synth": task("{{ tasks.review.output }} and {{ tasks.tests.output }}"),
                "review": task("Review {{ inputs.code }}", agent="beta"),
                "tests": task("Test it", depends_on=["review", "review"]),
                "docs": task("Style: {{ run_data.style }}"),
            },
        },
        AGENTS,
    )
    assert found.deps == {"synth": ["review", "tests"], "review": [], "tests": ["review"],
                          "docs": []}
    # Level by level, each level by name: a task comes after everything it depends on.
    assert found.order == ["docs", "review", "tests", "synth"]
    assert isinstance(found.definition, WorkflowDefinition)
    assert found.definition.tasks["review"].agent == "beta"
    assert found.definition.tasks["tests"].retry.max_retries == 0  # the defaults are filled


def test_topological_order_goes_level_by_level_and_sorts_each_level() -> None:
    deps = {"e": ["c", "d"], "d": ["a"], "c": ["a", "b"], "b": [], "a": [], "z": []}
    assert dag.topological(deps) == ["a", "b", "z", "c", "d", "e"]
    assert dag.topological({}) == []


def test_find_cycle_gives_a_closed_path_in_execution_order() -> None:
    assert dag.find_cycle({"a": ["c"], "b": ["a"], "c": ["b"]}) == ["a", "b", "c", "a"]
    assert dag.find_cycle({"x": ["y"], "y": ["x"], "q": []}) == ["x", "y", "x"]
    assert dag.find_cycle({"a": [], "b": ["a"], "c": ["a", "b"]}) is None
    assert dag.find_cycle({}) is None


def test_a_cycle_is_named_after_the_tasks_it_goes_through() -> None:
    with pytest.raises(ValidationFailed) as caught:
        dag.validate(
            {
                "tasks": {
                    "a": task("{{ tasks.c.output }}"),  # implied: a depends on c
                    "b": task(depends_on=["a"]),
                    "c": task(depends_on=["b"]),
                    "d": task(),
                }
            },
            AGENTS,
        )
    assert caught.value.extra["cycle"] == ["a", "b", "c", "a"]
    assert caught.value.extra["errors"] == [
        {"field": "tasks", "value": ["a", "b", "c", "a"],
         "message": "the workflow has a cycle: a -> b -> c -> a"}
    ]


def test_a_valid_definition_has_no_cycle_in_its_error() -> None:
    with pytest.raises(ValidationFailed) as caught:
        dag.validate({"tasks": {"a": task(agent="ghost")}}, AGENTS)
    assert caught.value.extra["cycle"] is None


@pytest.mark.parametrize(
    ("tasks", "field", "value", "message"),
    [
        ({"a": task(depends_on=["zz"])}, "tasks.a.depends_on", "zz",
         "depends on unknown task 'zz'"),
        ({"a": task("{{ tasks.zz.output }}")}, "tasks.a.instruction", "zz",
         "depends on unknown task 'zz'"),
        ({"a": task(depends_on=["a"])}, "tasks.a.depends_on", "a",
         "a task cannot depend on itself"),
        ({"a": task("again {{ tasks.a.output }}")}, "tasks.a.instruction", "a",
         "a task cannot depend on itself"),
        ({"Bad Name": task()}, "tasks.Bad Name", "Bad Name",
         "a task's name is lower-case letters, digits, - or _"),
    ],
)
def test_unknown_and_self_dependencies_and_bad_task_names(
    tasks: dict[str, Any], field: str, value: str, message: str
) -> None:
    assert only({"tasks": tasks}) == (field, value, message)


def test_a_dependency_declared_and_implied_is_reported_where_it_was_declared() -> None:
    assert only({"tasks": {"a": task("{{ tasks.zz.output }}", depends_on=["zz"])}}) == (
        "tasks.a.depends_on", "zz", "depends on unknown task 'zz'")


# -- agents -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("known", "hint"),
    [
        (set(), "(the tenant has no agents yet; create one with POST /v1/agents)"),
        ({"beta", "alpha"}, "(known: alpha, beta)"),
        ({f"a{i:02}" for i in range(12)},
         "(known: a00, a01, a02, a03, a04, a05, a06, a07, a08, a09, ... (12 in all))"),
    ],
)
def test_an_unknown_agent_is_named_with_the_agents_there_are(known: set[str], hint: str):
    assert only({"tasks": {"a": task(agent="ghost")}}, known) == (
        "tasks.a.agent", "ghost", f"unknown agent 'ghost' {hint}")


# -- templates ----------------------------------------------------------------------------


def test_references_reads_every_reference_and_every_bad_one() -> None:
    refs, bad = dag.references(
        "{{ inputs.a }} {{tasks.b-2.output}} {{ run_data.x:y/z }} {{ secrets.k }} "
        "{{ tasks.B.output }}"
    )
    assert refs == [("input", "a"), ("task", "b-2"), ("data", "x:y/z")]
    assert bad == [
        ("{{ secrets.k }}", f"{{{{ secrets.k }}}} {NOT_A_REFERENCE}"),
        ("{{ tasks.B.output }}", f"{{{{ tasks.B.output }}}} {NOT_A_REFERENCE}"),
    ]
    assert dag.references("plain text, no template") == ([], [])


@pytest.mark.parametrize(
    ("instruction", "value", "message"),
    [
        ("use {{ inputs.nope }}", "{{ inputs.nope }}",
         "missing input 'nope': the template uses it; declare it under `inputs`"),
        ("use {{ secrets.key }}", "{{ secrets.key }}", f"{{{{ secrets.key }}}} {NOT_A_REFERENCE}"),
        ("use {{ inputs.code", "{{ inputs.code", "unclosed {{ in '{{ inputs.code': close it "
         "with }}"),
        ("use inputs.code }}", "}}", "}} without an opening {{"),
        ("about {topic}", "{topic}", "{topic} looks like a template but has single braces; "
         "write {{ inputs.topic }}"),
        ("after { tasks.b.output }", "{ tasks.b.output }", "{ tasks.b.output } looks like a "
         "template but has single braces; write {{ tasks.b.output }}"),
    ],
)
def test_each_bad_template_is_named_in_its_task(instruction: str, value: str, message: str):
    data = {"inputs": {"code": {}}, "tasks": {"a": task(instruction), "b": task()}}
    assert only(data) == ("tasks.a.instruction", value, message)


def test_every_bad_template_of_an_instruction_is_reported() -> None:
    found = problems({"tasks": {"a": task("{topic} and }} and {{ inputs.code")}})
    assert [p["value"] for p in found] == ["{{ inputs.code", "}}", "{topic}"]
    assert {p["field"] for p in found} == {"tasks.a.instruction"}


def test_render_fills_inputs_outputs_and_run_data() -> None:
    rendered = dag.render(
        "{{ inputs.a }}|{{tasks.b.output}}|{{ run_data.k }}|{{ inputs.n }}|{{ inputs.gone }}|"
        "{{ nope }}",
        {"a": "A", "n": {"x": 1}},
        {"b": "B"},
        {"k": [1, 2]},
    )
    # Text as it is, anything else as JSON, nothing for what is not there; a bad template
    # (refused when the workflow is saved) is left as written.
    assert rendered == 'A|B|[1, 2]|{"x": 1}||{{ nope }}'


# -- the schema's problems ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "wf"}, [("tasks", None, "required, missing")]),
        ({"tasks": {}}, [("tasks", {}, "a workflow needs at least one task")]),
        (
            {"task": {}},
            [
                ("task", {}, "unknown field 'task' (did you mean tasks?); allowed: name, "
                 "description, inputs, tasks"),
                ("tasks", None, "required, missing"),
            ],
        ),
        (
            {"tasks": {"a": {"agent": "alpha", "prompt": "hi"}}},
            [
                ("tasks.a.instruction", None, "required, missing"),
                ("tasks.a.prompt", "hi", "unknown field 'prompt' (did you mean instruction?); "
                 f"allowed: {TASK_FIELDS}"),
            ],
        ),
        (
            {"tasks": {"a": {"agnet": "alpha", "instruction": "hi"}}},
            [
                ("tasks.a.agent", None, "required, missing"),
                ("tasks.a.agnet", "alpha", "unknown field 'agnet' (did you mean agent?); "
                 f"allowed: {TASK_FIELDS}"),
            ],
        ),
        (
            {"tasks": {"a": task(retry={"max_retry": 2})}},
            [("tasks.a.retry.max_retry", 2, "unknown field 'max_retry' (did you mean "
              "max_retries?); allowed: max_retries, delay_s")],
        ),
        (
            {"inputs": {"f": {"requird": True}}, "tasks": {"a": task()}},
            [("inputs.f.requird", True, "unknown field 'requird' (did you mean required?); "
              "allowed: required, description, default")],
        ),
        (
            {"tasks": {"a": task(timeout_s=-1)}},
            [("tasks.a.timeout_s", -1, "input should be greater than 0")],
        ),
        (
            {"tasks": {"a": task(depends_on="b"), "b": task()}},
            [("tasks.a.depends_on", "b", "input should be a valid list")],
        ),
        (
            {"tasks": {"a": "just a string"}},
            [("tasks.a", "just a string",
              "input should be a valid dictionary or instance of TaskSpec")],
        ),
        (
            {"name": "Bad", "tasks": {"a": task()}},
            [("name", "Bad", "string should match pattern '^[a-z0-9][a-z0-9_-]{0,99}$'")],
        ),
    ],
)
def test_schema_problems_in_the_documents_terms(
    data: dict[str, Any], expected: list[tuple[str, Any, str]]
) -> None:
    assert [(p["field"], p["value"], p["message"]) for p in problems(data)] == expected


def test_every_problem_is_reported_at_once_in_document_order() -> None:
    found = problems(
        {
            "name": "Bad",
            "tasks": {
                "first": task("{{ tasks.third.output }}", agent="ghost"),
                "second": {"agent": "alpha", "instruction": "x", "timeout": 3},
                "third": task("{{ inputs.nope }}", depends_on=["second", "first"]),
            },
        }
    )
    assert [(p["field"], p["message"].split(" (")[0].split(":")[0]) for p in found] == [
        ("name", "string should match pattern '^[a-z0-9][a-z0-9_-]{0,99}$'"),
        ("tasks.first.agent", "unknown agent 'ghost'"),
        ("tasks.second.timeout", "unknown field 'timeout'"),
        ("tasks.third.instruction", "missing input 'nope'"),
        ("tasks", "the workflow has a cycle"),  # the whole graph after its tasks
    ]
    assert found[2]["message"] == (
        f"unknown field 'timeout' (did you mean timeout_s?); allowed: {TASK_FIELDS}"
    )
    assert found[-1]["value"] == ["first", "third", "first"]


def test_a_long_value_is_shown_cut() -> None:
    long = "x" * 250
    assert dag.shown(long) == "x" * 200 + "..."
    assert dag.shown("short") == "short"
    assert dag.shown([1, 2]) == [1, 2]
    cut = dag.shown({"k": "v" * 300})
    assert cut.startswith('{"k": "vvv') and cut.endswith("...") and len(cut) == 203
    [p] = problems({"tasks": {"a": task(timeout_s=long)}})  # a problem shows its value cut
    assert p["field"] == "tasks.a.timeout_s" and p["value"] == "x" * 200 + "..."


# -- a run's inputs -----------------------------------------------------------------------


def definition(**inputs: dict[str, Any]) -> WorkflowDefinition:
    return WorkflowDefinition.model_validate({"inputs": inputs, "tasks": {"t": task()}})


def test_inputs_take_their_defaults_and_what_is_given() -> None:
    wf = definition(a={}, b={"required": False}, c={"default": 3}, d={"default": "x"})
    assert dag.check_inputs(wf, {"a": "1", "d": "given"}) == {"a": "1", "c": 3, "d": "given"}
    assert dag.check_inputs(definition(), {}) == {}


@pytest.mark.parametrize(
    ("given", "detail", "missing", "unknown"),
    [
        ({}, "missing inputs: a, d", ["a", "d"], []),
        ({"a": "", "d": None}, "missing inputs: a, d", ["a", "d"], []),  # empty is not given
        ({"a": 1}, "missing input: d", ["d"], []),
        ({"a": 1, "d": 2, "x": 3}, "unknown input: x", [], ["x"]),
        ({"a": 1, "x": 3, "y": 4}, "missing input: d; unknown inputs: x, y", ["d"], ["x", "y"]),
    ],
)
def test_missing_and_unknown_inputs_are_named(
    given: dict[str, Any], detail: str, missing: list[str], unknown: list[str]
) -> None:
    wf = definition(a={}, b={"required": False}, c={"default": 3}, d={})
    with pytest.raises(ValidationFailed) as caught:
        dag.check_inputs(wf, given)
    assert caught.value.detail == detail
    assert (caught.value.extra["missing"], caught.value.extra["unknown"]) == (missing, unknown)
    declared = "unknown input; declared: a, b, c, d"
    assert caught.value.extra["errors"] == [
        {"field": f"inputs.{n}", "value": None, "message": "missing input"} for n in missing
    ] + [{"field": f"inputs.{n}", "value": given[n], "message": declared} for n in unknown]


def test_an_input_given_to_a_workflow_without_inputs() -> None:
    with pytest.raises(ValidationFailed) as caught:
        dag.check_inputs(definition(), {"q": 1})
    assert caught.value.detail == "unknown input: q"
    assert caught.value.extra["errors"] == [
        {"field": "inputs.q", "value": 1, "message": "unknown input; declared: none"}
    ]


def test_a_task_named_twice_is_refused_not_dropped() -> None:
    twice = ("name: w\ntasks:\n  x: {agent: alpha, instruction: a}\n"
             "  x: {agent: beta, instruction: b}\n")
    with pytest.raises(ValidationFailed) as caught:
        dag.parse(twice)
    [p] = caught.value.extra["errors"]
    assert (p["line"], p["column"]) == (4, 3)
    assert p["message"].endswith("the key 'x' is given twice")
    with pytest.raises(ValidationFailed) as caught:
        dag.parse('{"name": "w", "tasks": {"x": {}, "x": {}}}')
    assert caught.value.extra["errors"] == [
        {"field": "source", "value": "x", "message": "the key 'x' is given twice in one object"}]
