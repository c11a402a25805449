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
    ToolCallDelta,
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
        extra = request.extra or {}
        if extra.get("top_p") is not None:
            body["top_p"] = extra["top_p"]
        user = extra.get("user") or (extra.get("metadata") or {}).get("user_id")
        if isinstance(user, str):
            body["metadata"] = {"user_id": user}
        choice = _tool_choice(request.tool_choice, extra.get("parallel_tool_calls"))
        if choice is not None and request.tools:
            body["tool_choice"] = choice
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

    async def stream(
        self, request: ChatRequest
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ChatResult]:
        start = time.perf_counter()
        result = ChatResult(content="", model=request.model or self.config.model or "")
        parts: list[str] = []
        blocks: dict[int, dict[str, Any]] = {}
        async with self.client() as client:
            req = client.build_request(
                "POST", self._url(), json=self._body(request, True), headers=self._headers()
            )
            resp = await self.send(client, req)
            started = stopped = False
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
                        if block.get("type") == "tool_use":
                            block["call"] = sum(
                                1 for b in blocks.values() if b.get("type") == "tool_use"
                            ) - 1
                            if result.ttft_ms is None:
                                result.ttft_ms = elapsed_ms(start)
                            yield ToolCallDelta(block["call"], block.get("id"), block.get("name"))
                    elif kind == "content_block_delta":
                        delta = msg["delta"]
                        if delta.get("type") == "text_delta":
                            if result.ttft_ms is None:
                                result.ttft_ms = elapsed_ms(start)
                            parts.append(delta["text"])
                            yield TextDelta(delta["text"])
                        elif delta.get("type") == "input_json_delta":
                            block = blocks[msg["index"]]
                            block["json"] += delta.get("partial_json", "")
                            if delta.get("partial_json"):
                                yield ToolCallDelta(block["call"], arguments=delta["partial_json"])
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
                        stopped = True
                        break
                if not started:
                    raise self.off_protocol("a stream with no message_start event")
                if not stopped and result.finish_reason is None:
                    raise ProviderError(
                        f"provider {self.config.name} broke off its answer: the stream ended "
                        "before its message_stop event",
                        provider=self.config.name,
                    )
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


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    """OpenAI's tool_choice (and parallel_tool_calls) in Anthropic's terms."""
    out: dict[str, Any] | None
    if choice is None:
        out = {"type": "auto"} if parallel is False else None
    elif choice == "auto":
        out = {"type": "auto"}
    elif choice == "required":
        out = {"type": "any"}
    elif choice == "none":
        out = {"type": "none"}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        out = {"type": "tool", "name": choice["function"]["name"]}
    else:
        out = None
    if out is not None and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _content(content: Any) -> Any:
    """OpenAI content parts in Anthropic's blocks: text as it is, images by URL or as
    base64 data (a data: URL)."""
    if not isinstance(content, list):
        return content or ""
    out: list[Any] = []
    for part in content:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "image_url":
            url = str((part.get("image_url") or {}).get("url") or "")
            if url.startswith("data:") and ";base64," in url:
                media, _, data = url[5:].partition(";base64,")
                source = {"type": "base64", "media_type": media, "data": data}
            else:
                source = {"type": "url", "url": url}
            out.append({"type": "image", "source": source})
        elif part.get("type") == "text":
            out.append({"type": "text", "text": str(part.get("text") or "")})
        else:
            out.append(part)
    return out


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
        if role in ("system", "developer"):
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(
                    str(p.get("text") or "") for p in content if isinstance(p, dict)
                )
            system.append(str(content or ""))
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
                "content": _content(m.get("content")),
            }
        )
    return "\n\n".join(system), out
