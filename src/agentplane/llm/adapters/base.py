"""The adapter interface, the normalised request and result, and the HTTP plumbing
(timeouts, retries honouring Retry-After, error mapping with the key redacted)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import random
import ssl
import time
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import httpx

from agentplane.llm.adapters.vendor_errors import (
    retry_after,
    upstream_reason,
    vendor_code,
    vendor_message,
)
from agentplane.llm.errors import ProviderError, ProviderTimeout
from agentplane.outbound import Guard, OutboundRefused, PinnedTransport, check_named, proxied


@functools.cache
def tls_context() -> ssl.SSLContext:
    """One TLS context for every call: making one (loading the CA certificates) costs
    milliseconds, which a client made per call would pay each time."""
    return ssl.create_default_context()


class _Clients:
    """The HTTP clients of one event loop, closed when the loop ends: a task waits on the
    loop for nothing, and closes them when it is cancelled (asyncio.run and every runner
    cancel the tasks left when they finish)."""

    MAX = 256
    _loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Clients] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self) -> None:
        self.clients: collections.OrderedDict[tuple[Any, ...], httpx.AsyncClient] = (
            collections.OrderedDict()
        )
        self.keeper = asyncio.ensure_future(self._keep())

    @classmethod
    def of_loop(cls) -> _Clients:
        loop = asyncio.get_running_loop()
        found = cls._loops.get(loop)
        if found is None or found.keeper.done():
            found = cls._loops[loop] = cls()
        return found

    def get(self, key: tuple[Any, ...]) -> httpx.AsyncClient:
        client = self.clients.get(key)
        if client is None or client.is_closed:
            base_url, timeout, headers, guard = key
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=64,
                                  keepalive_expiry=30)
            options: dict[str, Any] = {
                "base_url": base_url, "headers": dict(headers),
                "timeout": httpx.Timeout(timeout, connect=min(10.0, timeout)),
            }
            if proxied(base_url):  # the environment's proxy connects: httpx's own transport
                client = httpx.AsyncClient(
                    **options, verify=tls_context(), limits=limits,
                    event_hooks={"request": [functools.partial(check_named, guard)]})
            else:
                client = httpx.AsyncClient(
                    **options, transport=PinnedTransport(guard, verify=tls_context(),
                                                         limits=limits))
            self.clients[key] = client
            while len(self.clients) > self.MAX:  # the least recently made: closed when idle
                _, old = self.clients.popitem(last=False)
                asyncio.get_running_loop().call_later(
                    600, lambda c=old: asyncio.ensure_future(c.aclose()))
        self.clients.move_to_end(key)
        return client

    async def _keep(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            clients, self.clients = list(self.clients.values()), collections.OrderedDict()
            for client in clients:
                with contextlib.suppress(Exception):
                    await client.aclose()


RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504, 529}
MAX_RETRY_WAIT = 10.0


@dataclass
class ChatRequest:
    """OpenAI-style messages and tools: the lingua franca; adapters translate."""

    messages: list[dict[str, Any]]
    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: Any = None
    stop: list[str] | None = None
    extra: dict[str, Any] | None = None
    """Further parameters in OpenAI's names (top_p, seed, response_format, user, ...),
    passed on as they are by OpenAI-compatible providers and translated where another
    vendor has an equivalent (the gateway fills it from the client's request)."""

    def params(self) -> dict[str, Any]:
        out = {
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "tool_choice": self.tool_choice,
            "stop": self.stop,
        }
        if self.tools:
            out["tools"] = self.tools
        if self.extra:
            out.update(self.extra)
        return {k: v for k, v in out.items() if v is not None}


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass
class ChatResult:
    content: str
    model: str
    finish_reason: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    """Of prompt_tokens, those read from the provider's prompt cache."""
    cache_write_tokens: int = 0
    """Of prompt_tokens, those written to the prompt cache (Anthropic prices them higher)."""
    cost: Decimal | None = None
    """Cost reported by the provider (e.g. OpenRouter); it wins over our price table."""
    ttft_ms: int | None = None
    reasoning_tokens: int = 0
    """Of completion_tokens, those the model spent reasoning (as the vendor reports them)."""
    estimated: bool = False
    """The tokens were counted here: the provider reported no usage."""


def storable(result: ChatResult) -> ChatResult:
    """The result with any NUL character as U+FFFD: a model may write one, and neither
    PostgreSQL's text nor its JSON can hold it, so the call and its task could not be
    recorded."""
    if "\x00" not in result.content and not result.tool_calls:
        return result
    return replace(
        result,
        content=_without_nul(result.content),
        tool_calls=[replace(c, arguments=_without_nul(c.arguments)) for c in result.tool_calls],
    )


def _without_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    return value


@dataclass
class TextDelta:
    text: str


@dataclass
class ToolCallDelta:
    """A piece of a tool call as it streams: the first piece of call `index` carries its
    id and name, the following ones more of its arguments (JSON text)."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass
class EmbedRequest:
    input: list[str]
    model: str | None = None
    dimensions: int | None = None
    extra: dict[str, Any] | None = None


@dataclass
class EmbedResult:
    vectors: list[list[float]]
    model: str
    prompt_tokens: int = 0
    estimated: bool = False


@dataclass
class AdapterConfig:
    type: str
    name: str
    base_url: str | None = None
    api_key: str | None = None
    model: str | None = None
    timeout: float = 60.0
    max_retries: int = 2
    backoff: float = 0.5
    max_retry_wait: float = MAX_RETRY_WAIT
    """The longest wait before a retry: a vendor that asks for a longer one (Retry-After)
    is not waited for, its error is raised at once (its fallback takes the call)."""
    headers: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    guard: Guard = field(default_factory=Guard)
    """What base_url may resolve to (agentplane.outbound): public addresses unless told."""

    def __repr__(self) -> str:  # never print the key
        return f"AdapterConfig(type={self.type!r}, name={self.name!r}, base_url={self.base_url!r})"


class Adapter:
    def __init__(self, config: AdapterConfig) -> None:
        self.config = config

    async def complete(self, request: ChatRequest) -> ChatResult:
        raise NotImplementedError

    def stream(
        self, request: ChatRequest
    ) -> AsyncIterator[TextDelta | ToolCallDelta | ChatResult]:
        """Text and tool-call deltas as they come, then the final result (same content,
        tool calls and usage)."""
        raise NotImplementedError

    async def embed(self, request: EmbedRequest) -> EmbedResult:
        raise ProviderError(
            f"provider {self.config.name} ({self.config.type}) serves no embeddings",
            provider=self.config.name,
            upstream_status=400,
        )

    # -- HTTP ------------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        key = self.config.api_key
        if key:
            text = text.replace(key, "****")
            if len(key) > 12:  # vendors echo a truncated key: "sk-abc...wxyz"
                text = text.replace(key[:8], "****").replace(key[-4:], "****")
        return text

    @contextlib.asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """The client of this provider's settings on the running loop: kept open between
        calls, so that calls reuse their connections (and a TLS handshake is made once per
        connection, not once per call)."""
        config = self.config
        key = (config.base_url or "", config.timeout, tuple(sorted(config.headers.items())),
               config.guard)
        yield _Clients.of_loop().get(key)

    async def send(self, client: httpx.AsyncClient, req: httpx.Request) -> httpx.Response:
        """Send (streaming the body), retrying 429/5xx and connection errors with backoff."""
        attempt = 0
        while True:
            try:
                resp = await client.send(req, stream=True)
            except OutboundRefused as exc:
                raise ProviderError(
                    f"provider {self.config.name} is not reached: {exc}",
                    provider=self.config.name,
                ) from None
            except httpx.TimeoutException:
                if attempt >= self.config.max_retries:
                    tries = attempt + 1
                    raise ProviderTimeout(
                        f"provider {self.config.name}: no answer in {tries} "
                        f"attempt{'s' if tries > 1 else ''} of {self.config.timeout:g} s each",
                        provider=self.config.name,
                    ) from None
                delay = None
            except httpx.TransportError as exc:
                if attempt >= self.config.max_retries:
                    raise ProviderError(
                        f"cannot reach provider {self.config.name}: "
                        f"{self.redact(str(exc)) or type(exc).__name__}",
                        provider=self.config.name,
                    ) from None
                delay = None
            else:
                if 300 <= resp.status_code < 400:
                    await resp.aclose()  # a redirect may lead anywhere: it is not followed
                    raise ProviderError(
                        f"provider {self.config.name} answered a redirect "
                        f"({resp.status_code}); redirects are not followed: set its base_url "
                        "to the address that answers",
                        provider=self.config.name, upstream_status=resp.status_code,
                    )
                if resp.status_code < 400:
                    return resp
                await resp.aread()
                delay = retry_after(resp)
                if (
                    resp.status_code not in RETRY_STATUSES
                    or attempt >= self.config.max_retries
                    or (delay is not None and delay > self.config.max_retry_wait)
                ):
                    raise self.http_error(resp, delay)
            attempt += 1
            if delay is None:
                delay = self.config.backoff * (2 ** (attempt - 1)) * (0.75 + random.random() / 2)
            await asyncio.sleep(min(delay, self.config.max_retry_wait))

    def broken_off(self, exc: httpx.TransportError) -> ProviderError:
        """The connection failed while the answer was being read (not retried: the model
        may have done the work already)."""
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeout(
                f"provider {self.config.name} stopped answering for {self.config.timeout:g}s",
                provider=self.config.name,
            )
        return ProviderError(
            f"provider {self.config.name} broke off its answer: "
            f"{self.redact(str(exc)) or type(exc).__name__}",
            provider=self.config.name,
        )

    def off_protocol(self, what: str) -> ProviderError:
        """A 2xx answer this adapter cannot read: the vendor's fault, said as such."""
        return ProviderError(f"provider {self.config.name} sent {what}", provider=self.config.name)

    def http_error(self, resp: httpx.Response, retry_after: float | None = None) -> ProviderError:
        """The vendor's error, with its status, the reason a fallback may take the call
        (`context_window`, `content_policy`: agentplane.llm.fallbacks) and the Retry-After
        it asked for."""
        message, code = vendor_message(resp), vendor_code(resp)
        detail = f"provider {self.config.name} answered {resp.status_code}: {message}"
        extra = {"upstream_reason": upstream_reason(resp.status_code, code, message),
                 "retry_after": retry_after}
        return ProviderError(
            self.redact(detail)[:500], provider=self.config.name, upstream_status=resp.status_code,
            **{k: v for k, v in extra.items() if v is not None},
        )


async def sse_events(resp: httpx.Response) -> AsyncIterator[tuple[str | None, str]]:
    """(event name, data) of a text/event-stream response."""
    event: str | None = None
    data: list[str] = []
    async for line in resp.aiter_lines():
        if line == "":
            if data:
                yield event, "\n".join(data)
            event, data = None, []
        elif line.startswith(":"):
            continue
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield event, "\n".join(data)


def elapsed_ms(start: float) -> int:
    return round((time.perf_counter() - start) * 1000)
