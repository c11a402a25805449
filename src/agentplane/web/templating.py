"""Jinja2 templates of the dashboard, their filters, and pages as responses."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from agentplane import __version__, clock
from agentplane.auth import login
from agentplane.money import shown
from agentplane.web import http
from agentplane.web.http import WebUser

env = Environment(
    loader=PackageLoader("agentplane.web", "templates"),
    autoescape=select_autoescape(default=True, default_for_string=True),
    trim_blocks=True,
    lstrip_blocks=True,
    # The templates are the package's own files: never stat them again on each render
    # (an `{% include %}` in a loop looked its template up, with a stat, once per row).
    auto_reload=False,
)


def static(path: str) -> str:
    return f"/static/{path}?v={__version__}"


def money(value: Any, unpriced: int = 0) -> str:
    if value is None:
        return shown(None, unpriced)
    return shown(value if isinstance(value, Decimal) else Decimal(str(value)), unpriced)


def number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


def duration(ms: Any) -> str:
    if ms is None:
        return "—"
    ms = float(ms)
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    if ms < 3_600_000:
        return f"{int(ms // 60_000)} min {int(ms % 60_000 // 1000)} s"
    return f"{int(ms // 3_600_000)} h {int(ms % 3_600_000 // 60_000)} min"


def percent(value: Any) -> str:
    return "—" if value is None else f"{float(value) * 100:.1f}%"


def when(value: Any) -> Markup:
    """A time as <time>: UTC in the page, the reader's local time once app.js ran."""
    if value is None:
        return Markup("—")
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    utc = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return Markup('<time datetime="{}">{}</time>').format(
        utc.isoformat(), utc.strftime("%Y-%m-%d %H:%M:%S UTC"))


def ago(value: Any) -> str:
    if value is None:
        return "—"
    seconds = (clock.now() - value).total_seconds()
    if seconds < 60:
        return f"{max(0, int(seconds))} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def short(value: Any, n: int = 8) -> str:
    return "" if value is None else str(value)[:n]


def pretty(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str, sort_keys=True)


def clip(value: Any, n: int = 120) -> str:
    text = value if isinstance(value, str) else pretty(value)
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


env.filters.update(money=money, number=number, duration=duration, percent=percent,
                   when=when, ago=ago, short=short, pretty=pretty, clip=clip)
env.globals.update(static=static, version=__version__)

# What a redirect after an action may say (`?notice=`): fixed texts, nothing echoed.
NOTICES = {
    "provider-added": "The provider is added.",
    "model-added": "The model is added with its price.",
    "alias-added": "The alias is added.",
    "alias-deleted": "The alias is deleted.",
    "signed-out": "You are signed out.",
    "cancelled": "The run is cancelled.",
    "paused": "The run is paused.",
    "resumed": "The run goes on.",
    "retried": "The task runs again.",
    "answered": "The answer is in: the task goes on.",
    "started": "The run has started.",
    "job-retried": "The job is queued again.",
    "job-cancelled": "The job is cancelled.",
    "requeued": "A fresh job was queued from the dead letter.",
    "queue-paused": "The queue is paused.",
    "queue-resumed": "The queue is resumed.",
    "schedule-deleted": "The schedule is deleted.",
    "key-revoked": "The key is revoked: it no longer authenticates.",
    "invited": "The invitation is made.",
    "invitation-cancelled": "The invitation is cancelled.",
    "member-changed": "The member's role is changed.",
    "member-removed": "The member is removed.",
    "switched": "You are now in this tenant.",
    "message-requeued": "The message is due again: its attempts and time to live start afresh.",
}


def nav(user: WebUser | None) -> list[tuple[str, str]]:
    """The pages this user may open, in menu order."""
    if user is None:
        return []
    items = [("/", "Overview"), ("/runs", "Runs"), ("/workflows", "Workflows"),
             ("/agents", "Agents"), ("/sessions", "Sessions"), ("/llm-calls", "LLM calls"),
             ("/usage", "Usage")]
    if user.can("jobs:read"):
        items.append(("/queue", "Queue"))
    if user.can("messages:read"):
        items.append(("/messages", "Messages"))
    items.append(("/providers", "Providers"))
    if user.manages:
        items.append(("/keys", "API keys"))
    items.append(("/members", "Members"))
    if user.can("audit:read"):
        items.append(("/audit", "Audit log"))
    return items


def render(name: str, **context: Any) -> str:
    return env.get_template(name).render(**context)


async def page(
    request: Request,
    user: WebUser | None,
    name: str,
    *,
    status: int = 200,
    title: str = "",
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """A whole page (or, asked for by htmx with `HX-Target`, the template alone when it
    is a fragment: templates named `_*.html`)."""
    tenants: list[dict[str, Any]] = []
    if user is not None and user.principal.user_id is not None:
        tenants = await login.tenants_of(http.db_of(request), user.principal.user_id)
    notice = NOTICES.get(request.query_params.get("notice", ""))
    html = render(
        name,
        request=request,
        user=user,
        csrf=user.csrf if user else "",
        nav=nav(user),
        here=request.url.path,
        tenants=tenants,
        notice=notice,
        title=title,
        **context,
    )
    return HTMLResponse(html, status_code=status, headers=headers)


def fragment(name: str, *, status: int = 200, headers: dict[str, str] | None = None,
             **context: Any) -> HTMLResponse:
    """A piece of a page for htmx to swap in."""
    return HTMLResponse(render(name, **context), status_code=status, headers=headers)


TITLES = {400: "Bad request", 401: "Sign in", 403: "Not allowed", 404: "Not found",
          409: "Conflict", 413: "Too large", 414: "Address too long", 422: "Not valid",
          429: "Too many requests",
          500: "Something went wrong", 503: "Unavailable"}


async def error_page(
    request: Request, status: int, detail: str, headers: dict[str, str] | None
) -> HTMLResponse:
    title = TITLES.get(status, "Error")
    keep = {k: v for k, v in (headers or {}).items() if k.lower() == "retry-after"}
    if request.headers.get("hx-request"):
        # htmx swaps it into the page's message area (see the htmx-config meta tag).
        return fragment("_flash.html", status=status, kind="error", message=detail,
                        headers={**keep, "HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
    user = None
    try:
        user = await http.current_user(request)
    except Exception:  # the error may be the database itself
        user = None
    try:
        return await page(request, user, "error.html", status=status, title=title,
                          headers=keep, status_code=status, detail=detail)
    except Exception:
        return HTMLResponse(render("error.html", request=request, user=None, nav=[],
                                   tenants=[], csrf="", here="", notice=None, title=title,
                                   status_code=status, detail=detail),
                            status_code=status, headers=keep)


http.on_error(error_page)
