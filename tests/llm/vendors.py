"""Local HTTP servers speaking the OpenAI chat-completions and Anthropic messages
protocols (JSON and server-sent events), so the real adapters are exercised over
real sockets. `queue` scripts failures ahead of normal answers; `requests` records
what arrived."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from agentplane.outbound import Guard, parse_networks

KEY = "sk-test-0123456789abcdefSECRET"
# What adapters made by hand may reach: these servers, on loopback (agentplane.outbound).
LOCAL = Guard(parse_networks("127.0.0.0/8,::1"))


def reply_text(messages: list[dict[str, Any]]) -> str:
    last = next((m for m in reversed(messages) if m.get("role") in ("user", "tool")), {})
    content = last.get("content")
    if isinstance(content, list):
        content = " ".join(str(b.get("content") or b.get("text") or "") for b in content)
    return f"Echo from the vendor: {content} (and a few more words to stream)"


def words(value: Any) -> int:
    return len(json.dumps(value).split()) if not isinstance(value, str) else len(value.split())


class Vendor(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.queue: list[tuple[int, dict[str, str], Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.delay = 0.0
        self.cached_tokens = 0
        self.cache_write_tokens = 0  # Anthropic only: prompt tokens written to its cache
        self.cost: float | None = None
        # Sent as-is instead of an answer: a body the adapters cannot read, or one cut short
        # (`stall` seconds of silence after it, against a declared length of `length`).
        self.raw: bytes | None = None
        self.stall = 0.0
        # Streams: seconds between two chunks, and how many chunks to send before the
        # connection is dropped (None: all of them).
        self.chunk_delay = 0.0
        self.drop_after: int | None = None
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    server: Vendor
    path_expected = ""
    path_embeddings = ""

    def log_message(self, *args: Any) -> None:
        pass

    def _json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _sse_start(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Connection", "close")
        self.end_headers()

    def _sse(self, data: Any, event: str | None = None) -> None:
        if self.server.drop_after is not None:
            sent = getattr(self, "_sent", 0)
            if sent >= self.server.drop_after:
                raise ConnectionAbortedError("the vendor drops the connection mid-stream")
            self._sent = sent + 1
        text = (f"event: {event}\n" if event else "") + f"data: {json.dumps(data)}\n\n"
        self.wfile.write(text.encode())
        self.wfile.flush()
        if self.server.chunk_delay:
            time.sleep(self.server.chunk_delay)

    def _raw(self, stream: bool) -> None:
        raw = self.server.raw or b""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
        self.send_header("Content-Length", str(len(raw) + (100 if self.server.stall else 0)))
        self.end_headers()
        self.wfile.write(raw)
        self.wfile.flush()
        time.sleep(self.server.stall)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with self.server.lock:
            self.server.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": body}
            )
            scripted = self.server.queue.pop(0) if self.server.queue else None
        if self.server.delay:
            time.sleep(self.server.delay)
        if self.path == self.path_embeddings and self.path_embeddings:
            if not self.authorized():
                return self.unauthorized()
            return self.embed(body)
        if self.path != self.path_expected:
            return self._json(404, {"error": {"message": f"no route {self.path}"}})
        if scripted:
            status, headers, payload = scripted
            return self._json(status, payload, headers)
        if not self.authorized():
            return self.unauthorized()
        if self.server.raw is not None:
            return self._raw(bool(body.get("stream")))
        if body.get("stream"):
            try:
                return self.stream(body)
            except (ConnectionAbortedError, BrokenPipeError, ConnectionResetError):
                self.close_connection = True
                return None
        return self.complete(body)


class OpenAIHandler(Handler):
    path_expected = "/v1/chat/completions"
    path_embeddings = "/v1/embeddings"

    def embed(self, body: dict[str, Any]) -> None:
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        size = body.get("dimensions") or 8
        data = [
            {"object": "embedding", "index": i,
             "embedding": [round((len(t) + k) / (size + len(t)), 6) for k in range(size)]}
            for i, t in enumerate(texts)
        ]
        tokens = sum(words(t) for t in texts)
        self._json(200, {"object": "list", "data": data, "model": body["model"],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    def authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {KEY}"

    def unauthorized(self) -> None:
        sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
        self._json(
            401,
            {
                "error": {
                    "message": f"Incorrect API key provided: {sent}.",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            },
        )

    def answer(self, body: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str, dict[str, Any]]:
        tools = body.get("tools") or []
        if tools and body["messages"][-1].get("role") != "tool":
            fn = tools[0]["function"]
            calls = [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {
                        "name": fn["name"],
                        "arguments": json.dumps({"q": "weather in Oslo"}),
                    },
                }
            ]
            text, finish = "", "tool_calls"
        else:
            calls, text, finish = [], reply_text(body["messages"]), "stop"
        usage = {
            "prompt_tokens": sum(words(m.get("content") or "") for m in body["messages"]),
            "completion_tokens": words(text)
            + sum(words(c["function"]["arguments"]) for c in calls),
            "prompt_tokens_details": {"cached_tokens": self.server.cached_tokens},
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if self.server.cost is not None:
            usage["cost"] = self.server.cost
        return text, calls, finish, usage

    def complete(self, body: dict[str, Any]) -> None:
        text, calls, finish, usage = self.answer(body)
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        self._json(
            200,
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": usage,
            },
        )

    def stream(self, body: dict[str, Any]) -> None:
        text, calls, finish, usage = self.answer(body)
        self._sse_start()
        base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": body["model"]}
        self._sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        for piece in _pieces(text):
            self._sse({**base, "choices": [{"index": 0, "delta": {"content": piece}}]})
        for i, call in enumerate(calls):
            args = call["function"]["arguments"]
            head = {
                "index": i,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            self._sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [head]}}]})
            for part in (args[: len(args) // 2], args[len(args) // 2 :]):
                delta = {"tool_calls": [{"index": i, "function": {"arguments": part}}]}
                self._sse({**base, "choices": [{"index": 0, "delta": delta}]})
        self._sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            self._sse({**base, "choices": [], "usage": usage})
        self.wfile.write(b"data: [DONE]\n\n")


class AnthropicHandler(Handler):
    path_expected = "/v1/messages"

    def authorized(self) -> bool:
        return self.headers.get("x-api-key") == KEY and bool(self.headers.get("anthropic-version"))

    def unauthorized(self) -> None:
        self._json(
            401,
            {
                "type": "error",
                "error": {
                    "type": "authentication_error",
                    "message": f"invalid x-api-key {self.headers.get('x-api-key')}",
                },
            },
        )

    def answer(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
        assert isinstance(body.get("max_tokens"), int), "max_tokens is required"
        tools = body.get("tools") or []
        last = body["messages"][-1]
        tool_result = (
            isinstance(last["content"], list) and last["content"][0].get("type") == "tool_result"
        )
        if tools and not tool_result:
            blocks = [
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": tools[0]["name"],
                    "input": {"q": "weather in Oslo"},
                }
            ]
            stop = "tool_use"
        else:
            blocks, stop = [{"type": "text", "text": reply_text(body["messages"])}], "end_turn"
        prompt = sum(words(m["content"]) for m in body["messages"]) + words(body.get("system", ""))
        cached, written = self.server.cached_tokens, self.server.cache_write_tokens
        usage = {
            "input_tokens": prompt - cached - written,
            "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": written,
            "output_tokens": sum(
                words(b.get("text") or json.dumps(b.get("input"))) for b in blocks
            ),
        }
        return blocks, stop, usage

    def complete(self, body: dict[str, Any]) -> None:
        blocks, stop, usage = self.answer(body)
        self._json(
            200,
            {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": blocks,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            },
        )

    def stream(self, body: dict[str, Any]) -> None:
        blocks, stop, usage = self.answer(body)
        self._sse_start()
        start_usage = {**usage, "output_tokens": 1}
        self._sse(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": body["model"],
                    "content": [],
                    "stop_reason": None,
                    "usage": start_usage,
                },
            },
            "message_start",
        )
        self._sse({"type": "ping"}, "ping")
        for i, block in enumerate(blocks):
            if block["type"] == "text":
                self._sse(
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {"type": "text", "text": ""},
                    },
                    "content_block_start",
                )
                for piece in _pieces(block["text"]):
                    self._sse(
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "text_delta", "text": piece},
                        },
                        "content_block_delta",
                    )
            else:
                self._sse(
                    {
                        "type": "content_block_start",
                        "index": i,
                        "content_block": {**block, "input": {}},
                    },
                    "content_block_start",
                )
                raw = json.dumps(block["input"])
                for part in (raw[: len(raw) // 2], raw[len(raw) // 2 :]):
                    self._sse(
                        {
                            "type": "content_block_delta",
                            "index": i,
                            "delta": {"type": "input_json_delta", "partial_json": part},
                        },
                        "content_block_delta",
                    )
            self._sse({"type": "content_block_stop", "index": i}, "content_block_stop")
        self._sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage["output_tokens"]},
            },
            "message_delta",
        )
        self._sse({"type": "message_stop"}, "message_stop")


def _pieces(text: str) -> list[str]:
    out, step = [], 7
    for i in range(0, len(text), step):
        out.append(text[i : i + step])
    return out


@contextmanager
def serve(handler: type[Handler]) -> Iterator[Vendor]:
    server = Vendor(handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
