"""Anthropic's messages API over the same call path: the request in OpenAI's terms (the
lingua franca of agentplane.llm), the answer and its events as Anthropic writes them."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator

from agentplane.gateway.chat import arguments
from agentplane.gateway.models import MAX_TOKENS, Open, check_schema
from agentplane.gateway.stream import sse
from agentplane.llm.adapters.base import ChatRequest, ChatResult, TextDelta, ToolCallDelta
from agentplane.llm.tokens import estimate_prompt

STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class AnthropicTool(Open):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")
    description: str | None = None
    input_schema: dict[str, Any]

    @field_validator("input_schema")
    @classmethod
    def _schema(cls, value: dict[str, Any]) -> dict[str, Any]:
        check_schema(value, "input_schema")
        return value


class AnthropicMessage(Open):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


class MessagesIn(Open):
    model: str = Field(min_length=1, max_length=256)
    max_tokens: int = Field(ge=1, le=MAX_TOKENS)
    messages: list[AnthropicMessage] = Field(min_length=1, max_length=10_000)
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: list[str] | None = Field(default=None, max_length=16)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    tools: list[AnthropicTool] | None = Field(default=None, max_length=128)
    tool_choice: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    stream: bool | None = None


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(str(b.get("text") or "") for b in content or [] if isinstance(b, dict))


def _part(block: dict[str, Any]) -> dict[str, Any] | None:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": str(block.get("text") or "")}
    if kind == "image":
        source = block.get("source") or {}
        if source.get("type") == "base64":
            url = f"data:{source.get('media_type')};base64,{source.get('data')}"
        else:
            url = str(source.get("url") or "")
        return {"type": "image_url", "image_url": {"url": url}}
    return None


def openai_messages(body: MessagesIn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if body.system:
        out.append({"role": "system", "content": _text(body.system)})
    for m in body.messages:
        if isinstance(m.content, str):
            out.append({"role": m.role, "content": m.content})
            continue
        if m.role == "assistant":
            text = "".join(str(b.get("text") or "") for b in m.content if b.get("type") == "text")
            calls = [
                {"id": b.get("id", ""), "type": "function",
                 "function": {"name": b.get("name", ""),
                              "arguments": json.dumps(b.get("input") or {})}}
                for b in m.content if b.get("type") == "tool_use"
            ]
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            elif not text:
                message["content"] = ""
            out.append(message)
            continue
        parts = []
        for b in m.content:
            if b.get("type") == "tool_result":
                out.append({"role": "tool", "tool_call_id": str(b.get("tool_use_id") or ""),
                            "content": _text(b.get("content"))})
            elif (part := _part(b)) is not None:
                parts.append(part)
        if parts:
            out.append({"role": "user", "content": parts})
    return out


def chat_request(body: MessagesIn) -> ChatRequest:
    tools = [
        {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                          "parameters": t.input_schema}}
        for t in body.tools or []
    ]
    choice: Any = None
    extra: dict[str, Any] = {}
    tc = body.tool_choice or {}
    kind = tc.get("type")
    if kind == "auto":
        choice = "auto"
    elif kind == "any":
        choice = "required"
    elif kind == "none":
        choice = "none"
    elif kind == "tool":
        choice = {"type": "function", "function": {"name": tc.get("name")}}
    if tc.get("disable_parallel_tool_use"):
        extra["parallel_tool_calls"] = False
    if body.top_p is not None:
        extra["top_p"] = body.top_p
    if body.top_k is not None:
        extra["top_k"] = body.top_k
    user = (body.metadata or {}).get("user_id")
    if isinstance(user, str):
        extra["user"] = user
    return ChatRequest(
        messages=openai_messages(body),
        max_tokens=body.max_tokens,
        temperature=body.temperature,
        tools=tools or None,
        tool_choice=choice if tools else None,
        stop=body.stop_sequences,
        extra=extra or None,
    )


def usage(result: ChatResult) -> dict[str, Any]:
    cached, written = result.cached_tokens, result.cache_write_tokens
    return {
        "input_tokens": max(0, result.prompt_tokens - cached - written),
        "output_tokens": result.completion_tokens,
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def stop_reason(result: ChatResult) -> str:
    if result.tool_calls:
        return "tool_use"
    return STOP.get(result.finish_reason or "stop", "end_turn")


def message(msg_id: str, model: str, result: ChatResult) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if result.content:
        content.append({"type": "text", "text": result.content})
    for call in result.tool_calls:
        content.append({"type": "tool_use", "id": call.id, "name": call.name,
                        "input": json.loads(arguments(call)) if "_raw" not in call.arguments
                        else {}})
    return {
        "id": msg_id, "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason(result), "stop_sequence": None,
        "usage": usage(result),
    }


class Events:
    """The events of one streamed message, blocks numbered as they open."""

    def __init__(self, msg_id: str, model: str, request: ChatRequest) -> None:
        self.msg_id, self.model, self.request = msg_id, model, request
        self.index = -1
        self.open: tuple[str, int] | None = None  # ("text", 0) or ("tool", call index)

    def start(self) -> bytes:
        prompt = estimate_prompt(self.request.messages, self.request.tools)
        head = {"type": "message_start", "message": {
            "id": self.msg_id, "type": "message", "role": "assistant", "model": self.model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": 1}}}
        return sse(head, "message_start") + sse({"type": "ping"}, "ping")

    def _close(self) -> bytes:
        if self.open is None:
            return b""
        self.open = None
        return sse({"type": "content_block_stop", "index": self.index}, "content_block_stop")

    def _begin(self, key: tuple[str, int], block: dict[str, Any]) -> bytes:
        out = self._close()
        self.index += 1
        self.open = key
        return out + sse({"type": "content_block_start", "index": self.index,
                          "content_block": block}, "content_block_start")

    def delta(self, item: TextDelta | ToolCallDelta) -> bytes:
        out = b""
        if isinstance(item, TextDelta):
            if self.open != ("text", 0):
                out += self._begin(("text", 0), {"type": "text", "text": ""})
            delta = {"type": "text_delta", "text": item.text}
        else:
            if self.open != ("tool", item.index):
                out += self._begin(("tool", item.index), {
                    "type": "tool_use", "id": item.id or "", "name": item.name or "",
                    "input": {}})
            if not item.arguments:
                return out
            delta = {"type": "input_json_delta", "partial_json": item.arguments}
        return out + sse({"type": "content_block_delta", "index": self.index, "delta": delta},
                         "content_block_delta")

    def finish(self, result: ChatResult) -> bytes:
        return (
            self._close()
            + sse({"type": "message_delta",
                   "delta": {"stop_reason": stop_reason(result), "stop_sequence": None},
                   "usage": usage(result)}, "message_delta")
            + sse({"type": "message_stop"}, "message_stop")
        )
