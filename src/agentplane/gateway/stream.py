"""Server-sent events for the gateway's streamed calls.

A call's stream runs in a task of its own (Pump), which reads the provider as fast as
it answers into a queue; the response writes from the queue, with a comment line when
the provider has been silent for a while (proxies close quiet connections). The route
waits for the first item before it answers, so a call that fails before its first token
answers with an error status the SDKs understand, not a stream that breaks.

When the client goes away (EventStream watches for the disconnect, even while nothing
is being written), the pump's task is cancelled: the call is recorded as cancelled,
charged for what it generated, and its reservation released (agentplane.llm.calls).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

KEEPALIVE = b": keep-alive\n\n"


class _End:
    pass


END = _End()
"""The stream ended (after its last item)."""
SILENT = _End()
"""No item for a keep-alive interval."""
GONE = _End()
"""The client went away."""


class Failed:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Pump:
    """An async iterator drained by a task of its own into a queue."""

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._run(source))

    async def _run(self, source: AsyncIterator[Any]) -> None:
        try:
            async for item in source:
                self.queue.put_nowait(item)
            self.queue.put_nowait(END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.queue.put_nowait(Failed(exc))
        finally:
            with contextlib.suppress(Exception):
                await source.aclose()  # type: ignore[attr-defined]

    async def next(self, quiet_s: float) -> Any:
        """The next item, SILENT after `quiet_s` seconds without one, END at the end,
        Failed(exc) if the source raised, GONE once abandoned."""
        try:
            async with asyncio.timeout(quiet_s):
                return await self.queue.get()
        except TimeoutError:
            return SILENT

    def abandon(self) -> None:
        """The client went away: stop the call (it records what it generated)."""
        if not self.task.done():
            self.task.cancel()
        self.queue.put_nowait(GONE)

    async def close(self) -> None:
        """Stop the call if it still runs and wait until it has been recorded."""
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(BaseException):
            await self.task


def sse(data: Any, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


class EventStream(Response):
    """text/event-stream from an async iterator of bytes, which is closed (aclose) when
    the response ends for any reason; `pump` is abandoned as soon as the client
    disconnects, so a silent provider does not keep an abandoned call alive."""

    media_type = "text/event-stream"

    def __init__(
        self, body: AsyncIterator[bytes], pump: Pump, headers: Mapping[str, str] | None = None
    ) -> None:
        self.body_iterator = body
        self.pump = pump
        self.status_code = 200
        self.background = None
        self.init_headers(
            {"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self.pump.abandon()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await send(
                {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
            )
            async for chunk in self.body_iterator:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # the client went away while being written to
            self.pump.abandon()
        finally:
            watcher.cancel()
            await asyncio.shield(self._finish())

    async def _finish(self) -> None:
        with contextlib.suppress(Exception):
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
        await self.pump.close()
