"""OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, LM Studio, llama.cpp server)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx

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
    sse_events,
)
from agentplane.llm.errors import ProviderError
from agentplane.llm.tokens import count_tokens, estimate_prompt


class OpenAIAdapter(Adapter):
    def _body(self, request: ChatRequest, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            **request.params(),
            "model": request.model or self.config.model,
            "messages": request.messages,
        }
        if "max_completion_tokens" in body:  # the newer name; vendors refuse both at once
            body["max_completion_tokens"] = body.pop("max_tokens", None) or body[
                "max_completion_tokens"
            ]
        body.pop("stream_options", None)
        if stream:
            # Usage is always asked for, so a streamed call costs what it would unstreamed.
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    async def complete(self, request: ChatRequest) -> ChatResult:
        start = time.perf_counter()
        async with self.client() as client:
            req = client.build_request(
                "POST", "chat/completions", json=self._body(request, False), headers=self._headers()
            )
            resp = await self.send(client, req)
            try:
                await resp.aread()
            except httpx.TransportError as exc:
                raise self.broken_off(exc) from None
        try:
            body = resp.json()
            choice = body["choices"][0]
            message = choice["message"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise ProviderError(
                f"provider {self.config.name} sent an answer that is not a chat completion",
                provider=self.config.name,
            ) from None
        calls = [
            _tool_call(c.get("id"), c.get("function", {})) for c in message.get("tool_calls") or []
        ]
        result = ChatResult(
            content=message.get("content") or "",
            model=body.get("model") or request.model or "",
            finish_reason=choice.get("finish_reason"),
            tool_calls=calls,
            ttft_ms=elapsed_ms(start),
        )
        _usage(result, body.get("usage"), request)
        return result

    async def stream(
        self, request: ChatRequest
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ChatResult]:
        start = time.perf_counter()
        parts: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        result = ChatResult(content="", model=request.model or self.config.model or "")
        usage = None
        async with self.client() as client:
            req = client.build_request(
                "POST", "chat/completions", json=self._body(request, True), headers=self._headers()
            )
            resp = await self.send(client, req)
            events, done = 0, False
            try:
                async for _, data in sse_events(resp):
                    events += 1
                    if data.strip() == "[DONE]":
                        done = True
                        break
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        raise self.stream_error(chunk["error"])
                    result.model = chunk.get("model") or result.model
                    usage = chunk.get("usage") or usage
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            if result.ttft_ms is None:
                                result.ttft_ms = elapsed_ms(start)
                            parts.append(delta["content"])
                            yield TextDelta(delta["content"])
                        for tc in delta.get("tool_calls") or []:
                            index = tc.get("index", 0)
                            slot = calls.setdefault(index, {"id": None, "name": "", "args": ""})
                            slot["id"] = tc.get("id") or slot["id"]
                            fn = tc.get("function") or {}
                            slot["name"] += fn.get("name") or ""
                            slot["args"] += fn.get("arguments") or ""
                            if result.ttft_ms is None:
                                result.ttft_ms = elapsed_ms(start)
                            yield ToolCallDelta(
                                index, tc.get("id"), fn.get("name"), fn.get("arguments") or ""
                            )
                        if choice.get("finish_reason"):
                            result.finish_reason = choice["finish_reason"]
                if not events:
                    raise self.off_protocol("no stream events")
                if not done and result.finish_reason is None:
                    raise ProviderError(
                        f"provider {self.config.name} broke off its answer: the stream ended "
                        "before its last chunk",
                        provider=self.config.name,
                    )
            except (ValueError, KeyError, TypeError, AttributeError):
                raise self.off_protocol("a stream that is not chat completion chunks") from None
            except httpx.TransportError as exc:
                raise self.broken_off(exc) from None
            finally:
                await resp.aclose()
        result.content = "".join(parts)
        result.tool_calls = [
            _tool_call(c["id"], {"name": c["name"], "arguments": c["args"]})
            for _, c in sorted(calls.items())
        ]
        _usage(result, usage, request)
        yield result

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        body: dict[str, Any] = {
            **(request.extra or {}),
            "model": request.model or self.config.model,
            "input": request.input,
            "encoding_format": "float",
        }
        if request.dimensions is not None:
            body["dimensions"] = request.dimensions
        async with self.client() as client:
            req = client.build_request("POST", "embeddings", json=body, headers=self._headers())
            resp = await self.send(client, req)
            try:
                await resp.aread()
            except httpx.TransportError as exc:
                raise self.broken_off(exc) from None
        try:
            answer = resp.json()
            data = sorted(answer["data"], key=lambda d: d.get("index", 0))
            vectors = [[float(x) for x in d["embedding"]] for d in data]
        except (ValueError, KeyError, TypeError):
            raise self.off_protocol("an answer that is not a list of embeddings") from None
        usage = answer.get("usage") or {}
        result = EmbedResult(vectors, answer.get("model") or body["model"] or "")
        if usage.get("prompt_tokens") is not None:
            result.prompt_tokens = int(usage["prompt_tokens"])
        else:
            result.prompt_tokens = sum(count_tokens(text) for text in request.input)
            result.estimated = True
        return result

    def stream_error(self, error: Any) -> ProviderError:
        message = error.get("message") if isinstance(error, dict) else str(error)
        return ProviderError(
            self.redact(f"provider {self.config.name} failed mid-stream: {message}")[:500],
            provider=self.config.name,
        )


def _tool_call(call_id: str | None, fn: dict[str, Any]) -> ToolCall:
    raw = fn.get("arguments") or "{}"
    try:
        args = json.loads(raw) if isinstance(raw, str) else dict(raw)
    except ValueError:
        args = {"_raw": raw}  # models do emit broken JSON; keep it for the caller to see
    return ToolCall(id=call_id or "", name=fn.get("name") or "", arguments=args)


def _usage(result: ChatResult, usage: dict[str, Any] | None, request: ChatRequest) -> None:
    if usage:
        result.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        result.completion_tokens = int(usage.get("completion_tokens") or 0)
        details = usage.get("prompt_tokens_details") or {}
        result.cached_tokens = int(details.get("cached_tokens") or 0)
        reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens")
        result.reasoning_tokens = int(reasoning or 0)
        if usage.get("cost") is not None:
            result.cost = Decimal(str(usage["cost"]))
    else:  # servers that report no usage: count it ourselves rather than record zero
        result.prompt_tokens = estimate_prompt(request.messages, request.tools)
        result.completion_tokens = count_tokens(result.content) + sum(
            count_tokens(json.dumps(c.arguments)) + count_tokens(c.name)
            for c in result.tool_calls
        )
        result.estimated = True
