"""Anthropic messages API, with streaming and tool use."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from agentplane.llm.adapters.base import (
    Adapter,
    ChatRequest,
    ChatResult,
    TextDelta,
    ToolCall,
    elapsed_ms,
    sse_events,
)
from agentplane.llm.errors import ProviderError

VERSION = "2023-06-01"
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


class AnthropicAdapter(Adapter):
    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": VERSION}
        if self.config.api_key:
            headers["x-api-key"] = self.config.api_key
        return headers

    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        system, messages = to_anthropic(request.messages)
        body: dict[str, Any] = {
            "model": request.model or self.config.model,
            "max_tokens": request.max_tokens or 1024,  # required by this API
            "messages": messages,
        }
        if system:
            body["system"] = system
        if request.temperature is not None:
            body["temperature"] = request.temperature
        if request.stop:
            body["stop_sequences"] = request.stop
        if request.tools:
            body["tools"] = [
                {
                    "name": t["function"]["name"],
                    "description": t["function"].get("description", ""),
                    "input_schema": t["function"].get("parameters") or {"type": "object"},
                }
                for t in request.tools
            ]
        if stream:
            body["stream"] = True
        return body

    def _url(self) -> str:
        return (
            "messages"
            if (self.config.base_url or "").rstrip("/").endswith("/v1")
            else "v1/messages"
        )

    async def complete(self, request: ChatRequest) -> ChatResult:
        start = time.perf_counter()
        async with self.client() as client:
            req = client.build_request(
                "POST", self._url(), json=self._body(request, False), headers=self._headers()
            )
            resp = await self.send(client, req)
            try:
                await resp.aread()
            except httpx.TransportError as exc:
                raise self.broken_off(exc) from None
        try:
            body = resp.json()
            blocks = body["content"]
            usage = body.get("usage") or {}
        except (ValueError, KeyError, TypeError):
            raise ProviderError(
                f"provider {self.config.name} sent an answer that is not a message",
                provider=self.config.name,
            ) from None
        result = ChatResult(
            content="".join(b.get("text", "") for b in blocks if b.get("type") == "text"),
            model=body.get("model") or request.model or "",
            finish_reason=FINISH.get(body.get("stop_reason"), body.get("stop_reason")),
            tool_calls=[
                ToolCall(id=b.get("id", ""), name=b.get("name", ""), arguments=b.get("input") or {})
                for b in blocks
                if b.get("type") == "tool_use"
            ],
            ttft_ms=elapsed_ms(start),
        )
        _usage(result, usage)
        result.completion_tokens = int(usage.get("output_tokens") or 0)
        return result

    async def stream(self, request: ChatRequest) -> AsyncIterator[TextDelta | ChatResult]:
        start = time.perf_counter()
        result = ChatResult(content="", model=request.model or self.config.model or "")
        parts: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        async with self.client() as client:
            req = client.build_request(
                "POST", self._url(), json=self._body(request, True), headers=self._headers()
            )
            resp = await self.send(client, req)
            started = False
            try:
                async for event, data in sse_events(resp):
                    msg = json.loads(data)
                    kind = msg.get("type") or event
                    if kind == "message_start":
                        started = True
                        result.model = msg["message"].get("model") or result.model
                        _usage(result, msg["message"].get("usage") or {})
                    elif kind == "content_block_start":
                        block = dict(msg["content_block"])
                        block["json"] = ""
                        blocks[msg["index"]] = block
                    elif kind == "content_block_delta":
                        delta = msg["delta"]
                        if delta.get("type") == "text_delta":
                            if result.ttft_ms is None:
                                result.ttft_ms = elapsed_ms(start)
                            parts.append(delta["text"])
                            yield TextDelta(delta["text"])
                        elif delta.get("type") == "input_json_delta":
                            blocks[msg["index"]]["json"] += delta.get("partial_json", "")
                    elif kind == "message_delta":
                        reason = (msg.get("delta") or {}).get("stop_reason")
                        result.finish_reason = FINISH.get(reason, reason)
                        usage = msg.get("usage") or {}
                        if "output_tokens" in usage:
                            result.completion_tokens = int(usage["output_tokens"])
                    elif kind == "error":
                        error = msg.get("error") or {}
                        raise ProviderError(
                            self.redact(
                                f"provider {self.config.name} failed mid-stream: "
                                f"{error.get('message', 'error')}"
                            )[:500],
                            provider=self.config.name,
                        )
                    elif kind == "message_stop":
                        break
                if not started:
                    raise self.off_protocol("a stream with no message_start event")
            except (ValueError, KeyError, TypeError, AttributeError):
                raise self.off_protocol("a stream that is not message events") from None
            except httpx.TransportError as exc:
                raise self.broken_off(exc) from None
            finally:
                await resp.aclose()
        result.content = "".join(parts)
        result.tool_calls = [
            ToolCall(id=b.get("id", ""), name=b.get("name", ""), arguments=_json(b["json"]))
            for _, b in sorted(blocks.items())
            if b.get("type") == "tool_use"
        ]
        yield result


def _usage(result: ChatResult, usage: dict[str, Any]) -> None:
    # input_tokens excludes cache reads and writes; our prompt_tokens is the whole prompt.
    cached = int(usage.get("cache_read_input_tokens") or 0)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    result.prompt_tokens = int(usage.get("input_tokens") or 0) + cached + created
    result.cached_tokens = cached
    result.cache_write_tokens = created


def _json(raw: str) -> dict[str, Any]:
    try:
        return json.loads(raw) if raw else {}
    except ValueError:
        return {"_raw": raw}


def to_anthropic(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI-style messages to (system, messages) with tool_use / tool_result blocks."""
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for m in messages:
        role = m.get("role")
        if role == "system":
            system.append(str(m.get("content") or ""))
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": m.get("tool_call_id", ""),
                "content": str(m.get("content") or ""),
            }
            if out and out[-1]["role"] == "user" and isinstance(out[-1]["content"], list):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
            continue
        if role == "assistant" and m.get("tool_calls"):
            content: list[dict[str, Any]] = []
            if m.get("content"):
                content.append({"type": "text", "text": m["content"]})
            for c in m["tool_calls"]:
                fn = c.get("function") or {}
                args = fn.get("arguments") or "{}"
                content.append(
                    {
                        "type": "tool_use",
                        "id": c.get("id", ""),
                        "name": fn.get("name", ""),
                        "input": _json(args) if isinstance(args, str) else args,
                    }
                )
            out.append({"role": "assistant", "content": content})
            continue
        out.append(
            {
                "role": "assistant" if role == "assistant" else "user",
                "content": m.get("content") or "",
            }
        )
    return "\n\n".join(system), out
