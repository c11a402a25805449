"""OpenAI's chat completions: the request as a ChatRequest, the answer and its chunks
exactly as OpenAI writes them."""

from __future__ import annotations

import json
from typing import Any

from agentplane.gateway.errors import InvalidRequest
from agentplane.gateway.models import ChatCompletionIn
from agentplane.llm.adapters.base import ChatRequest, ChatResult, ToolCall, ToolCallDelta

# Parameters ChatRequest has fields for, and those the gateway itself acts on.
OWN = {
    "model", "messages", "tools", "tool_choice", "max_tokens", "max_completion_tokens",
    "temperature", "stop", "stream", "stream_options", "n",
}


def chat_request(body: ChatCompletionIn, context_window: int | None, model: str) -> ChatRequest:
    limit = body.max_completion_tokens or body.max_tokens
    if limit is not None and context_window is not None and limit > context_window:
        name = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
        raise InvalidRequest(
            f"{name} is {limit}, more than the context window of {model} ({context_window})",
            param=name,
            code="integer_above_max_value",
        )
    dumped = body.model_dump(exclude_none=True, by_alias=True)
    extra = {k: v for k, v in dumped.items() if k not in OWN}
    if body.max_completion_tokens is not None:
        extra["max_completion_tokens"] = body.max_completion_tokens
    stop = body.stop
    return ChatRequest(
        messages=dumped["messages"],
        max_tokens=limit,
        temperature=body.temperature,
        tools=dumped.get("tools"),
        tool_choice=dumped.get("tool_choice"),
        stop=[stop] if isinstance(stop, str) else stop,
        extra=extra or None,
    )


def arguments(call: ToolCall) -> str:
    raw = call.arguments
    if set(raw) == {"_raw"}:  # the model wrote JSON that does not parse: as it wrote it
        return str(raw["_raw"])
    return json.dumps(raw, ensure_ascii=False)


def tool_calls(result: ChatResult) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": arguments(c)},
        }
        for c in result.tool_calls
    ]


def usage(result: ChatResult) -> dict[str, Any]:
    return {
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "total_tokens": result.prompt_tokens + result.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": result.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": result.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def finish_reason(result: ChatResult) -> str:
    if result.tool_calls:
        return "tool_calls"
    return result.finish_reason or "stop"


def completion(call_id: str, created: int, model: str, result: ChatResult) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": result.content if result.content or not result.tool_calls else None,
        "refusal": None,
        "annotations": [],
    }
    if result.tool_calls:
        message["tool_calls"] = tool_calls(result)
    return {
        "id": call_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(result),
            }
        ],
        "usage": usage(result),
        "service_tier": "default",
        "system_fingerprint": None,
    }


class Chunks:
    """The chunks of one streamed completion: one id and created for all of them."""

    def __init__(self, call_id: str, created: int, model: str, include_usage: bool) -> None:
        self.base = {
            "id": call_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": None,
        }
        self.include_usage = include_usage
        self.tools_seen: set[int] = set()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        out = {
            **self.base,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }
        if self.include_usage:
            out["usage"] = None
        return out

    def first(self) -> dict[str, Any]:
        return self._chunk({"role": "assistant", "content": "", "refusal": None})

    def text(self, text: str) -> dict[str, Any]:
        return self._chunk({"content": text})

    def tool(self, delta: ToolCallDelta) -> dict[str, Any]:
        part: dict[str, Any] = {"index": delta.index}
        if delta.index not in self.tools_seen:
            self.tools_seen.add(delta.index)
            part.update(id=delta.id or "", type="function",
                        function={"name": delta.name or "", "arguments": delta.arguments})
        else:
            part["function"] = {"arguments": delta.arguments}
        return self._chunk({"tool_calls": [part]})

    def finish(self, result: ChatResult) -> dict[str, Any]:
        return self._chunk({}, finish_reason(result))

    def usage(self, result: ChatResult) -> dict[str, Any]:
        return {**self.base, "choices": [], "usage": usage(result)}
