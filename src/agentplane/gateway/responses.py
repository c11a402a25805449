"""OpenAI's Responses API (the SDK's and the Agents SDK's default) over the same call
path: input items as chat messages, the response and its events as OpenAI writes them.
Responses are not stored: a request names its whole input (previous_response_id is
refused)."""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import Field, field_validator

from agentplane.gateway.chat import arguments
from agentplane.gateway.errors import InvalidRequest
from agentplane.gateway.models import MAX_TOKENS, Open, check_schema
from agentplane.gateway.stream import sse
from agentplane.llm.adapters.base import ChatRequest, ChatResult, TextDelta, ToolCallDelta


class FunctionTool(Open):
    type: Literal["function"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _schema(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            check_schema(value, "parameters")
        return value


class ResponsesIn(Open):
    model: str = Field(min_length=1, max_length=256)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    tools: list[FunctionTool] | None = Field(default=None, max_length=128)
    tool_choice: Any = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=MAX_TOKENS)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    text: dict[str, Any] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(default=None, max_length=256)
    previous_response_id: str | None = None
    stream: bool | None = None


def _content(content: Any) -> Any:
    if isinstance(content, str):
        return content
    parts = []
    for p in content or []:
        kind = p.get("type") if isinstance(p, dict) else None
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": str(p.get("text") or "")})
        elif kind == "input_image":
            parts.append({"type": "image_url", "image_url": {"url": str(p.get("image_url")
                                                                      or "")}})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(p.get("refusal") or "")})
    return parts


def messages(body: ResponsesIn) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if body.instructions:
        out.append({"role": "system", "content": body.instructions})
    items = [{"role": "user", "content": body.input}] if isinstance(body.input, str) else (
        body.input)
    for i, item in enumerate(items):
        kind = item.get("type") or "message"
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "system", "developer", "assistant"):
                raise InvalidRequest(f"input[{i}].role: {role!r} is not a role",
                                     param=f"input[{i}].role")
            content = _content(item.get("content"))
            if role == "assistant" and isinstance(content, list):
                content = "".join(p["text"] for p in content if p["type"] == "text")
            out.append({"role": role, "content": content})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id") or ""), "type": "function",
                    "function": {"name": str(item.get("name") or ""),
                                 "arguments": str(item.get("arguments") or "{}")}}
            last = out[-1] if out else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            out.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""),
                        "content": output if isinstance(output, str) else json.dumps(output)})
        elif kind == "reasoning":
            continue
        else:
            raise InvalidRequest(f"input[{i}].type: {kind!r} is not served",
                                 param=f"input[{i}].type")
    if not out:
        raise InvalidRequest("input: nothing to answer", param="input")
    return out


def chat_request(body: ResponsesIn) -> ChatRequest:
    if body.previous_response_id:
        raise InvalidRequest("previous_response_id: responses are not stored; send the "
                             "whole input", param="previous_response_id")
    tools = [
        {"type": "function", "function": {
            "name": t.name, "description": t.description or "",
            "parameters": t.parameters or {"type": "object", "properties": {}},
            **({"strict": t.strict} if t.strict is not None else {})}}
        for t in body.tools or []
    ]
    choice = body.tool_choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        choice = {"type": "function", "function": {"name": choice.get("name")}}
    extra: dict[str, Any] = {}
    fmt = (body.text or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        extra["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        extra["response_format"] = {"type": "json_schema", "json_schema": {
            k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}}
    for name in ("top_p", "user", "parallel_tool_calls"):
        if getattr(body, name) is not None:
            extra[name] = getattr(body, name)
    return ChatRequest(
        messages=messages(body),
        max_tokens=body.max_output_tokens,
        temperature=body.temperature,
        tools=tools or None,
        tool_choice=choice if tools else None,
        extra=extra or None,
    )


class Builder:
    """One response: its items as they stream, then whole."""

    def __init__(self, resp_id: str, created: int, model: str, body: ResponsesIn) -> None:
        self.resp_id, self.created, self.model, self.body = resp_id, created, model, body
        self.seq = -1
        self.items: list[dict[str, Any]] = []
        self.open: dict[str, Any] | None = None
        self.tool_items: dict[int, dict[str, Any]] = {}

    def response(self, status: str, result: ChatResult | None = None) -> dict[str, Any]:
        body = self.body
        out: dict[str, Any] = {
            "id": self.resp_id, "object": "response", "created_at": self.created,
            "status": status, "error": None, "incomplete_details": None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens,
            "model": self.model, "output": self.items if result is None else output(
                self.resp_id, result),
            "parallel_tool_calls": body.parallel_tool_calls is not False,
            "previous_response_id": None, "reasoning": {"effort": None, "summary": None},
            "store": False, "temperature": body.temperature, "top_p": body.top_p,
            "text": body.text or {"format": {"type": "text"}},
            "tool_choice": body.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in body.tools or []],
            "truncation": "disabled", "usage": None, "user": body.user,
            "metadata": body.metadata or {},
        }
        if result is not None:
            out["usage"] = usage(result)
            if result.finish_reason == "length":
                out["status"] = "incomplete"
                out["incomplete_details"] = {"reason": "max_output_tokens"}
        return out

    def _event(self, kind: str, **data: Any) -> bytes:
        self.seq += 1
        return sse({"type": kind, "sequence_number": self.seq, **data}, kind)

    def start(self) -> bytes:
        head = self.response("in_progress")
        return (self._event("response.created", response=head)
                + self._event("response.in_progress", response=head))

    def _close(self) -> bytes:
        item, self.open = self.open, None
        if item is None:
            return b""
        index = self.items.index(item)
        if item["type"] == "message":
            part = item["content"][0]
            item["status"] = "completed"
            return (self._event("response.output_text.done", item_id=item["id"],
                                output_index=index, content_index=0, text=part["text"],
                                logprobs=[])
                    + self._event("response.content_part.done", item_id=item["id"],
                                  output_index=index, content_index=0, part=part)
                    + self._event("response.output_item.done", output_index=index, item=item))
        item["status"] = "completed"
        return (self._event("response.function_call_arguments.done", item_id=item["id"],
                            output_index=index, arguments=item["arguments"])
                + self._event("response.output_item.done", output_index=index, item=item))

    def delta(self, d: TextDelta | ToolCallDelta) -> bytes:
        out = b""
        if isinstance(d, TextDelta):
            if self.open is None or self.open["type"] != "message":
                out += self._close()
                item = {"type": "message", "id": f"msg_{self.resp_id[5:]}", "status":
                        "in_progress", "role": "assistant", "content": []}
                self.items.append(item)
                self.open = item
                index = len(self.items) - 1
                out += self._event("response.output_item.added", output_index=index,
                                   item={**item, "content": []})
                part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
                item["content"].append(part)
                out += self._event("response.content_part.added", item_id=item["id"],
                                   output_index=index, content_index=0, part=dict(part))
            item = self.open
            item["content"][0]["text"] += d.text
            return out + self._event("response.output_text.delta", item_id=item["id"],
                                     output_index=self.items.index(item), content_index=0,
                                     delta=d.text, logprobs=[])
        if d.index not in self.tool_items:
            out += self._close()
            item = {"type": "function_call", "id": f"fc_{self.resp_id[5:]}_{d.index}",
                    "call_id": d.id or "", "name": d.name or "", "arguments": "",
                    "status": "in_progress"}
            self.tool_items[d.index] = item
            self.items.append(item)
            self.open = item
            out += self._event("response.output_item.added", output_index=len(self.items) - 1,
                               item=dict(item))
        item = self.tool_items[d.index]
        if not d.arguments:
            return out
        item["arguments"] += d.arguments
        return out + self._event("response.function_call_arguments.delta", item_id=item["id"],
                                 output_index=self.items.index(item), delta=d.arguments)

    def finish(self, result: ChatResult) -> bytes:
        out = self._close()
        done = self.response("completed")
        done["usage"] = usage(result)
        if result.finish_reason == "length":
            done["status"], done["incomplete_details"] = "incomplete", {
                "reason": "max_output_tokens"}
        kind = "response.completed" if done["status"] == "completed" else "response.incomplete"
        return out + self._event(kind, response=done)


def output(resp_id: str, result: ChatResult) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    if result.content or not result.tool_calls:
        items.append({"type": "message", "id": f"msg_{resp_id[5:]}", "status": "completed",
                      "role": "assistant", "content": [
                          {"type": "output_text", "text": result.content, "annotations": [],
                           "logprobs": []}]})
    for i, call in enumerate(result.tool_calls):
        items.append({"type": "function_call", "id": f"fc_{resp_id[5:]}_{i}",
                      "call_id": call.id, "name": call.name, "arguments": arguments(call),
                      "status": "completed"})
    return items


def usage(result: ChatResult) -> dict[str, Any]:
    return {
        "input_tokens": result.prompt_tokens,
        "input_tokens_details": {"cached_tokens": result.cached_tokens},
        "output_tokens": result.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": result.reasoning_tokens},
        "total_tokens": result.prompt_tokens + result.completion_tokens,
    }
