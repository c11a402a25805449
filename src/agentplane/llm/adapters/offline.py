"""The offline provider: deterministic answers with no network and no key.

The same conversation always gives the same answer, so tests and the demo are
repeatable. It offers a tool call when tools are offered (and the last message is
not already a tool result), answers in JSON when asked to, stops at max_tokens,
and counts tokens with the same counter budgets estimate with.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from agentplane.llm.adapters.base import (
    Adapter,
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    elapsed_ms,
)
from agentplane.llm.tokens import _TOKEN, count_tokens, estimate_prompt, message_text

MODEL = "offline-1"
OPENERS = (
    "Here is a plan.",
    "Understood.",
    "Working through it step by step.",
    "Short answer first.",
)


class OfflineAdapter(Adapter):
    async def complete(self, request: ChatRequest) -> ChatResult:
        start = time.perf_counter()
        delay = float(self.config.options.get("latency_ms", 0)) / 1000  # to simulate a model
        if delay:
            await asyncio.sleep(delay)
        result = answer(request, request.model or self.config.model or MODEL)
        result.ttft_ms = elapsed_ms(start)
        return result

    async def stream(
        self, request: ChatRequest
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ChatResult]:
        result = await self.complete(request)
        for piece in re.findall(r"\S+\s*|\s+", result.content):
            yield TextDelta(piece)
        for i, call in enumerate(result.tool_calls):
            yield ToolCallDelta(i, call.id, call.name, json.dumps(call.arguments))
        yield result

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        """A unit vector per text from its words' hashes: texts sharing words are near."""
        size = request.dimensions or DIMENSIONS
        vectors = [_vector(text, size) for text in request.input]
        tokens = sum(count_tokens(text) for text in request.input)
        return EmbedResult(vectors, request.model or EMBEDDING_MODEL, tokens)


DIMENSIONS = 256
EMBEDDING_MODEL = "offline-embed-1"


def _vector(text: str, size: int) -> list[float]:
    vector = [0.0] * size
    for word in _TOKEN.findall(text.lower()):
        h = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[int.from_bytes(h[:4], "big") % size] += 1.0 if h[4] & 1 else -1.0
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def answer(request: ChatRequest, model: str) -> ChatResult:
    messages = request.messages
    digest = hashlib.sha256(
        json.dumps([messages, request.tools], sort_keys=True, default=str).encode()
    )
    seed = int.from_bytes(digest.digest()[:4], "big")
    prompt_tokens = estimate_prompt(messages, request.tools)
    last = messages[-1] if messages else {"role": "user", "content": ""}

    tool = _chosen_tool(request, last)
    if tool is not None:
        fn = tool["function"]
        args = _arguments(fn.get("parameters") or {}, message_text(_last_user(messages)))
        call = ToolCall(id=f"call_{seed:08x}", name=fn["name"], arguments=args)
        return ChatResult(
            content="",
            model=model,
            finish_reason="tool_calls",
            tool_calls=[call],
            prompt_tokens=prompt_tokens,
            completion_tokens=count_tokens(json.dumps({"name": call.name, "arguments": args})),
        )

    if last.get("role") == "tool":
        text = f"The tool returned: {str(last.get('content') or '')[:400]}. That settles it."
    else:
        question = " ".join(message_text(_last_user(messages)).split())
        words = question.split()
        topic = " ".join(words[:12]) + (" ..." if len(words) > 12 else "")
        text = (
            f"{OPENERS[seed % len(OPENERS)]} You asked: {topic or 'nothing'}.\n"
            f"1. Restate the goal in one sentence.\n"
            f"2. Break it into {2 + seed % 3} steps and do the first.\n"
            f"3. Check the result against the goal.\n"
            f"Answer: an offline, deterministic reply (#{seed % 10000:04d})."
        )
    if _wants_json(request, messages):
        text = json.dumps({"answer": text, "confidence": round(0.5 + (seed % 50) / 100, 2)})
    text, finish = _truncate(text, request.max_tokens)
    return ChatResult(
        content=text,
        model=model,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=count_tokens(text),
    )


def _last_user(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next((m for m in reversed(messages) if m.get("role") == "user"), {"content": ""})


def _chosen_tool(request: ChatRequest, last: dict[str, Any]) -> dict[str, Any] | None:
    if not request.tools or request.tool_choice == "none" or last.get("role") == "tool":
        return None
    choice = request.tool_choice
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        return next((t for t in request.tools if t["function"]["name"] == name), None)
    return request.tools[0]


def _arguments(schema: dict[str, Any], text: str) -> dict[str, Any]:
    props = schema.get("properties") or {}
    wanted = schema.get("required") or list(props)
    return {name: _value(props.get(name) or {}, text) for name in wanted}


def _value(spec: dict[str, Any], text: str) -> Any:
    if spec.get("enum"):
        return spec["enum"][0]
    kind = spec.get("type", "string")
    return {
        "integer": 1,
        "number": 1.0,
        "boolean": True,
        "array": [],
        "object": {},
    }.get(kind, " ".join(text.split()[:16]) or "example")


def _wants_json(request: ChatRequest, messages: list[dict[str, Any]]) -> bool:
    wanted = ((request.extra or {}).get("response_format") or {}).get("type")
    if wanted in ("json_object", "json_schema"):
        return True
    system = " ".join(message_text(m) for m in messages if m.get("role") == "system").lower()
    return "json" in system


def _truncate(text: str, max_tokens: int | None) -> tuple[str, str]:
    if max_tokens is None:
        return text, "stop"
    tokens = list(_TOKEN.finditer(text))
    if len(tokens) <= max_tokens:
        return text, "stop"
    return (text[: tokens[max_tokens - 1].end()] if max_tokens else ""), "length"
