"""Handlers by job type, the context a handler receives, and how it reports errors.

A handler is `async def handler(ctx: JobContext) -> result` (JSON-serialisable).
Raise `PermanentError` for a failure no retry can fix (straight to dead letters);
any other exception is retryable. `ctx.idempotency_key` (job id and attempt)
lets side effects be made exactly once.
"""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from uuid import UUID

from agentplane.errors import ValidationFailed


class PermanentError(Exception):
    """The job cannot succeed: do not retry it."""


class JobCancelled(Exception):
    """Raised by `ctx.raise_if_cancelled()`: the job was cancelled while running."""


class JobContext:
    """What a handler gets. The payload is decoded on first read and the cancel flag
    made on first use: a worker starts thousands of jobs a second, most of which
    never look at either."""

    __slots__ = (
        "_flag",
        "_payload",
        "_raw",
        "attempt",
        "job_id",
        "queue",
        "tenant_id",
        "type",
        "worker_id",
    )

    def __init__(self, *, tenant_id: UUID, job_id: UUID, attempt: int, type: str, queue: str,
                 worker_id: str, payload: Any = None, payload_json: str | None = None) -> None:
        self.tenant_id, self.job_id, self.attempt = tenant_id, job_id, attempt
        self.type, self.queue, self.worker_id = type, queue, worker_id
        self._payload, self._raw = payload, payload_json
        self._flag: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"JobContext(type={self.type!r}, job_id={self.job_id}, attempt={self.attempt})"

    @property
    def payload(self) -> Any:
        if self._raw is not None:
            self._payload, self._raw = json.loads(self._raw), None
        return self._payload

    @property
    def idempotency_key(self) -> str:
        return f"{self.job_id}:{self.attempt}"

    @property
    def _cancelled(self) -> asyncio.Event:
        if self._flag is None:
            self._flag = asyncio.Event()
        return self._flag

    @property
    def cancelled(self) -> bool:
        """True once the job was cancelled or this worker lost its lease."""
        return self._flag is not None and self._flag.is_set()

    async def wait_cancelled(self) -> None:
        await self._cancelled.wait()

    def cancel(self) -> None:
        """Raise the flag the handler sees (the worker's side)."""
        self._cancelled.set()

    def raise_if_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.job_id} was cancelled")


Handler = Callable[[JobContext], Awaitable[Any]]


class Registry:
    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}

    def handler(self, type_: str) -> Callable[[Handler], Handler]:
        """Decorator: `@registry.handler("email.send")`."""

        def register(fn: Handler) -> Handler:
            if not asyncio.iscoroutinefunction(fn):
                raise TypeError(f"handler for {type_!r} must be an async function")
            self.handlers[type_] = fn
            return fn

        return register

    def get(self, type_: str) -> Handler | None:
        return self.handlers.get(type_)

    def types(self) -> list[str]:
        return sorted(self.handlers)


registry = Registry()
"""The default registry: modules imported by `agentplane worker --import` add to it."""
handler = registry.handler


# agentplane's own job types: every worker runs them without being told.
BUILTIN_HANDLERS = ("agentplane.runtime.handler",)


def import_modules(names: Iterable[str]) -> None:
    """Import the built-in handlers and the modules named by `--import` /
    AGENTPLANE_WORKER_IMPORTS (job handlers, tools: whatever they register)."""
    for name in (*BUILTIN_HANDLERS, *names):
        name = name.strip()
        if not name:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ValidationFailed(
                f"cannot import module {name!r} (from --import or AGENTPLANE_WORKER_IMPORTS): "
                f"{exc}"
            ) from None
