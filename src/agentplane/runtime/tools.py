"""The tool registry: a JSON schema per tool and the built-ins, all working offline.

Pure tools are functions of their arguments. Stateful tools (run data, subtasks,
handoffs, asking a person) touch the run, so the executor performs them inside its
own transaction; here they only declare their schema.
"""

from __future__ import annotations

import ast
import json
import operator
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsonschema


class ToolFailed(Exception):
    """The tool ran and failed; the model is told, the task goes on."""


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    schema: dict[str, Any]
    fn: Callable[[dict[str, Any]], Any] | None = None
    """None: a stateful tool the executor performs."""

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
            "Ask a person for input; the task waits for the answer.",
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


def get(name: str) -> Tool | None:
    return BUILTINS.get(name)


def unknown(names: list[str]) -> list[str]:
    return [n for n in names if n not in BUILTINS]
