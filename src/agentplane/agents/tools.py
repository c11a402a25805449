"""The tool registry, what an agent may be given: a JSON schema per tool, the built-ins
(all working offline) and the tools a team adds with `@agentplane.tool`.

Pure tools are functions of their arguments. Stateful tools (run data, subtasks,
handoffs, asking a person) touch the run, so the runtime's executor performs them inside
its own transaction; here they only declare their schema.

A tool of your own lives in a module that the API and the workers import (named by
`--import` or AGENTPLANE_WORKER_IMPORTS, like job handlers)::

    import agentplane

    @agentplane.tool("shout", description="Upper-case a text.")
    def shout(text: str) -> dict:
        return {"text": text.upper()}

The model calls it with keyword arguments checked against its JSON Schema (given, or
made from the signature); it may be async; what it returns (JSON) goes back to the
model and into the trace. Raising ToolFailed (or any exception) tells the model, and
the task goes on.
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import operator
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, get_type_hints

import jsonschema


class ToolFailed(Exception):
    """The tool ran and failed; the model is told, the task goes on."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    schema: dict[str, Any]
    fn: Callable[[dict[str, Any]], Any] | None = None
    """None: a stateful tool the executor performs. May return an awaitable."""
    source: str = "built-in"
    """Where it comes from: built-in, or the module that registered it."""

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/tools` and `agentplane tools list` show."""
        return {
            "name": self.name,
            "description": self.description,
            "schema": self.schema,
            "source": self.source,
            "stateful": self.fn is None,
        }

    def spec(self, agents: list[str] | None = None) -> dict[str, Any]:
        """The OpenAI-style function spec offered to the model."""
        schema = json.loads(json.dumps(self.schema))
        props = schema.get("properties", {})
        if "agent" in props and agents:
            props["agent"]["enum"] = agents  # the team this agent may delegate to
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": schema},
        }

    def check(self, args: dict[str, Any]) -> None:
        try:
            jsonschema.validate(args, self.schema)
        except jsonschema.ValidationError as exc:
            raise ToolFailed(f"invalid arguments for {self.name}: {exc.message}") from None


def _obj(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


# -- pure tools --------------------------------------------------------------------------

_OPS: dict[type, Callable[..., Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
}


def calculator(args: dict[str, Any]) -> Any:
    """Arithmetic only: the expression's AST is walked, never eval'd."""

    def walk(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
            left, right = walk(node.left), walk(node.right)
            if isinstance(node.op, ast.Pow) and abs(right) > 100:
                raise ToolFailed("exponent too large")
            return _OPS[type(node.op)](left, right)
        if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
            return _OPS[type(node.op)](walk(node.operand))
        raise ToolFailed(f"not arithmetic: {ast.dump(node)[:60]}")

    try:
        tree = ast.parse(str(args["expression"]), mode="eval")
    except SyntaxError:
        raise ToolFailed(f"cannot parse {args['expression']!r} as arithmetic") from None
    try:
        return {"result": walk(tree.body)}
    except ZeroDivisionError:
        raise ToolFailed("division by zero") from None


def text_stats(args: dict[str, Any]) -> Any:
    text = str(args["text"])
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text)
    return {
        "characters": len(text),
        "lines": text.count("\n") + 1 if text else 0,
        "words": len(words),
        "top_words": Counter(w.lower() for w in words).most_common(5),
    }


def regex_extract(args: dict[str, Any]) -> Any:
    pattern = args.get("pattern") or r"(?:def|class|function)\s+\w+"
    try:
        found = re.findall(pattern, str(args["text"]))
    except re.error as exc:
        raise ToolFailed(f"bad pattern: {exc}") from None
    return {"matches": found[:50], "count": len(found)}


def json_query(args: dict[str, Any]) -> Any:
    doc = args["document"]
    if isinstance(doc, str):
        try:
            doc = json.loads(doc)
        except json.JSONDecodeError as exc:
            raise ToolFailed(f"document is not JSON: {exc.msg}") from None
    for part in [p for p in str(args.get("path") or "").split(".") if p]:
        if (
            isinstance(doc, list)
            and part.lstrip("-").isdigit()
            and -len(doc) <= int(part) < len(doc)
        ):
            doc = doc[int(part)]
        elif isinstance(doc, dict) and part in doc:
            doc = doc[part]
        else:
            raise ToolFailed(f"path element {part!r} not found")
    return {"value": doc}


TEXT = {"type": "string", "maxLength": 200_000}
KEY = {"type": "string", "pattern": r"^[A-Za-z0-9_.:/-]{1,255}$"}
AGENT = {"type": "string", "description": "the agent's id (slug)"}

BUILTINS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "text_stats",
            "Count characters, lines and words of a text and its top words.",
            _obj({"text": TEXT}, ["text"]),
            text_stats,
        ),
        Tool(
            "regex_extract",
            "Extract every match of a regular expression from a text.",
            _obj({"text": TEXT, "pattern": {"type": "string", "maxLength": 1000}}, ["text"]),
            regex_extract,
        ),
        Tool(
            "calculator",
            "Evaluate an arithmetic expression.",
            _obj({"expression": {"type": "string", "maxLength": 1000}}, ["expression"]),
            calculator,
        ),
        Tool(
            "json_query",
            "Read the value at a dotted path (a.b.0) of a JSON document.",
            _obj({"document": {}, "path": {"type": "string"}}, ["document", "path"]),
            json_query,
        ),
        Tool(
            "run_data_get",
            "Read a fact shared by the agents of this run.",
            _obj({"key": KEY}, ["key"]),
        ),
        Tool(
            "run_data_put",
            "Share a fact with the other agents of this run (write once).",
            _obj(
                {"key": KEY, "value": {}, "tags": {"type": "array", "items": {"type": "string"}}},
                ["key", "value"],
            ),
        ),
        Tool(
            "spawn_subtask",
            "Start a subtask for an agent of the team.",
            _obj(
                {"agent": AGENT, "instruction": {"type": "string", "minLength": 1}},
                ["agent", "instruction"],
            ),
        ),
        Tool(
            "handoff",
            "Hand your work to another agent of the team (for review, or to continue).",
            _obj(
                {
                    "agent": AGENT,
                    "type": {
                        "type": "string",
                        "enum": ["review", "handoff", "collaboration", "feedback"],
                    },
                    "message": {"type": "string", "minLength": 1},
                },
                ["agent", "type", "message"],
            ),
        ),
        Tool(
            "ask_human",
            (
                "Ask a person for input (an answer matching `schema`, a JSON Schema): the "
                "task waits and the run pauses until someone answers the input request."
            ),
            _obj(
                {
                    "prompt": {"type": "string", "minLength": 1, "maxLength": 10_000},
                    "schema": {"type": "object"},
                },
                ["prompt"],
            ),
        ),
    )
}


# Every tool by name: the built-ins, then those registered by imported modules.
REGISTRY: dict[str, Tool] = dict(BUILTINS)
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # what model APIs accept as a function name
_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object",
          list: "array"}


def tool(
    name: str | None = None,
    *,
    description: str | None = None,
    schema: dict[str, Any] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register a function as a tool agents may be given (`tools: [name]`).
    The name defaults to the function's, the description to its docstring's first line
    and the schema to one made from its annotated parameters."""

    def register(fn: Callable[..., Any]) -> Callable[..., Any]:
        tool_name = name or fn.__name__
        if not NAME.match(tool_name):
            raise ValueError(f"tool name {tool_name!r}: letters, digits, _ or - (at most 64)")
        if tool_name in BUILTINS:
            raise ValueError(f"tool {tool_name!r} is built in; choose another name")
        text = description or (inspect.getdoc(fn) or "").split("\n")[0]
        if not text:
            raise ValueError(f"tool {tool_name!r} needs a description (or a docstring)")
        spec = schema if schema is not None else _schema_of(fn)
        jsonschema.Draft202012Validator.check_schema(spec)
        REGISTRY[tool_name] = Tool(tool_name, text, spec, _called(tool_name, fn), fn.__module__)
        return fn

    return register


def _schema_of(fn: Callable[..., Any]) -> dict[str, Any]:
    hints = get_type_hints(fn)
    props: dict[str, Any] = {}
    required = []
    for param in inspect.signature(fn).parameters.values():
        kind = _TYPES.get(hints.get(param.name))
        props[param.name] = {"type": kind} if kind else {}
        if param.default is inspect.Parameter.empty:
            required.append(param.name)
    return _obj(props, required)


def _called(name: str, fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
    """fn with keyword arguments; whatever it raises is the model's to know, not a crash."""

    async def wait(pending: Any) -> Any:
        try:
            return await pending
        except ToolFailed:
            raise
        except Exception as exc:
            raise ToolFailed(f"{name} failed: {type(exc).__name__}: {exc}") from None

    @functools.wraps(fn)
    def call(args: dict[str, Any]) -> Any:
        try:
            result = fn(**args)
        except ToolFailed:
            raise
        except Exception as exc:
            raise ToolFailed(f"{name} failed: {type(exc).__name__}: {exc}") from None
        return wait(result) if inspect.isawaitable(result) else result

    return call


def get(name: str) -> Tool | None:
    return REGISTRY.get(name)


def listed() -> list[Tool]:
    return sorted(REGISTRY.values(), key=lambda t: (t.source != "built-in", t.name))


def unknown(names: list[str]) -> list[str]:
    return [n for n in names if n not in REGISTRY]
