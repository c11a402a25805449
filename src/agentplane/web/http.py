"""The dashboard's HTTP pieces: the signed-in user (a session cookie over a login
session), CSRF tokens, form bodies, security headers, and the route class that turns
every error into a page.

A browser signs in through auth's login (same password check, same lockout, same
one-time codes as `POST /v1/auth/login`); the login session it gets is carried in an
HttpOnly, SameSite=Lax cookie (Secure outside development), signed with a key of its
own. Each request reads the session's principal as the API reads an access token's
(`auth.authenticate.session_identity`): a revoked session, a removed member or a demotion
takes effect at once.

Every POST carries the session's CSRF token, in the form (`csrf`) or, from htmx, in
the `X-CSRF-Token` header (static/app.js copies it from the page's meta tag). The
sign-in form, before any session, uses a random double-submit cookie instead.
"""

from __future__ import annotations

import logging
import secrets as pysecrets
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit
from uuid import UUID

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from agentplane.auth import scopes as sc
from agentplane.auth import secrets
from agentplane.auth.audit import Origin
from agentplane.auth.authenticate import session_identity
from agentplane.auth.models import Identity, Principal
from agentplane.db.pool import Database
from agentplane.errors import (
    AgentplaneError,
    BadRequest,
    Forbidden,
    NotFound,
    Unauthorized,
)

log = logging.getLogger("agentplane.web")

COOKIE = "agentplane_session"
SIGNIN_COOKIE = "agentplane_signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
MAX_FIELDS = 500
MAX_FIELD_CHARS = 200_000
"""A form value longer than this is refused (a workflow input may be a whole file)."""

# No inline script or style anywhere: htmx's own config comes from a meta tag, its
# indicator styles from the stylesheet. Charts are SVG with presentation attributes.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


@dataclass(frozen=True)
class WebUser:
    """A signed-in person in one tenant: the identity the services check, and the
    page's CSRF token."""

    identity: Identity
    csrf: str
    tenants: list[dict[str, Any]] = field(default_factory=list)

    @property
    def principal(self) -> Principal:
        return self.identity.principal

    @property
    def tenant_id(self) -> UUID:
        return self.identity.principal.tenant_id

    @property
    def role(self) -> str:
        return self.identity.principal.role

    def can(self, *scopes: str) -> bool:
        return self.identity.principal.can(*scopes)

    @property
    def manages(self) -> bool:
        """Owners and admins: keys, members, providers, the queue."""
        return self.role in sc.MANAGERS


class SignInRequired(Exception):
    """No valid session: a page redirects to the sign-in form."""


def db_of(request: Request) -> Database:
    return request.app.state.db


def origin(request: Request) -> Origin:
    return Origin(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
    )


def secure_cookies(request: Request) -> bool:
    return db_of(request).settings.env != "development"


async def current_user(request: Request) -> WebUser | None:
    """The request's signed-in user, once per request; None without a valid session."""
    state = request.scope.setdefault("state", {})
    if "web_user" in state:
        return state["web_user"]
    user = None
    value = request.cookies.get(COOKIE)
    claims = secrets.read_web_session(db_of(request).settings, value) if value else None
    if claims is not None:
        try:
            identity = await session_identity(db_of(request), claims)
        except Unauthorized:
            identity = None
        if identity is not None:
            state["identity"] = identity  # the RateLimit-* headers, as for the API
            user = WebUser(identity, secrets.csrf_token(db_of(request).settings, claims.session_id))
    state["web_user"] = user
    return user


async def signed_in(request: Request) -> WebUser:
    """Dependency: the signed-in user, else a redirect to the sign-in form."""
    user = await current_user(request)
    if user is None:
        raise SignInRequired()
    return user


def need(user: WebUser, *scopes: str, managers: bool = False,
         roles: frozenset[str] | None = None) -> None:
    """Forbidden unless the user holds the scopes (and is an owner or admin, or has one
    of `roles`: the API route's own role set, so the two cannot differ)."""
    if managers and not user.manages:
        raise Forbidden("this page is for owners and admins")
    if roles is not None and user.role not in roles:
        raise Forbidden(f"this needs the role {' or '.join(sorted(roles))}")
    missing = set(scopes) - user.principal.scopes
    if missing:
        raise Forbidden(f"your role ({user.role}) does not allow this: "
                        f"it needs {', '.join(sorted(missing))}")


# --- forms --------------------------------------------------------------------------------


class Form(dict[str, str]):
    """A posted form: the last value of each field, and every value in `lists`."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        super().__init__(pairs)
        self.lists: dict[str, list[str]] = {}
        for k, v in pairs:
            self.lists.setdefault(k, []).append(v)

    def text(self, name: str, default: str = "") -> str:
        return self.get(name, default).strip()


async def read_form(request: Request) -> Form:
    """The body as application/x-www-form-urlencoded (what forms and htmx send)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise BadRequest("forms are sent as application/x-www-form-urlencoded")
    body = await request.body()
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True,
                          max_num_fields=MAX_FIELDS, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("the form could not be read") from None
    if any(len(v) > MAX_FIELD_CHARS for _, v in pairs):
        raise BadRequest(f"a form field is longer than {MAX_FIELD_CHARS} characters")
    return Form(pairs)


def _same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and secrets.same(a, b)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Posted:
    user: WebUser
    form: Form


async def posted(request: Request) -> Posted:
    """Dependency of every action: the signed-in user and the form, once its CSRF token
    is the session's. Roles are checked by the action itself (`need`)."""
    user = await current_user(request)
    if user is None:
        raise Unauthorized("your session has ended: sign in again")
    form = await read_form(request)
    token = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    if not _same(token, user.csrf):
        raise Forbidden("the form's security token is missing or wrong: reload the page "
                        "and try again")
    return Posted(user, form)


def new_signin_token() -> str:
    return pysecrets.token_urlsafe(24)


def check_signin_token(request: Request, form: Form) -> None:
    if not _same(form.get(CSRF_FIELD), request.cookies.get(SIGNIN_COOKIE)):
        raise Forbidden("the sign-in form has expired: reload the page and try again")


# --- responses ----------------------------------------------------------------------------


def safe_next(target: str | None) -> str:
    """A local path to go back to after signing in; never another site."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    if "\\" in target or len(target) > 2000:
        return "/"
    return target


def redirect(request: Request, to: str) -> Response:
    """After a POST: 303 to `to` (htmx follows HX-Redirect instead)."""
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": to})
    return RedirectResponse(to, status_code=303)


def to_signin(request: Request) -> Response:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = "/login" + ("" if here == "/" else f"?next={quote(here, safe='/')}")
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


def add_security_headers(response: Response, csp: str = CSP) -> Response:
    for name, value in SECURITY_HEADERS.items():
        if name not in response.headers:
            response.headers[name] = csp if name == "content-security-policy" else value
    return response


def parse_uuid(value: str, noun: str) -> UUID:
    """A path's id; a malformed one is simply not found (a 404 page, not a 422)."""
    try:
        return UUID(value)
    except ValueError:
        raise NotFound(f"no {noun} {value[:60]!r}") from None


ErrorPage = Callable[[Request, int, str, dict[str, str] | None], Coroutine[Any, Any, Response]]
_error_page: list[ErrorPage] = []


def on_error(render: ErrorPage) -> None:
    """Set how errors become pages (templating registers itself here)."""
    _error_page[:] = [render]


class WebRoute(APIRoute):
    """A dashboard route: errors become pages of their status (a 404 page for another
    tenant's id, a 403 page for a role's limit), never a trace; every response carries
    the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                response = await handler(request)
            except SignInRequired:
                response = to_signin(request)
            except AgentplaneError as exc:
                if exc.status >= 500:
                    log.error("page failed: %s", exc.detail, extra={"problem": exc.type})
                if isinstance(exc, Unauthorized) and request.method == "GET":
                    response = to_signin(request)
                else:
                    response = await _error_page[0](request, exc.status, exc.detail, exc.headers)
            except RequestValidationError as exc:
                fields = ", ".join(
                    ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path"))
                    for e in exc.errors()
                )
                response = await _error_page[0](request, 422, f"invalid {fields}", None)
            except Exception:
                log.exception("unhandled error in a page")
                response = await _error_page[0](
                    request, 500, "something went wrong; the request id identifies it in "
                    "the server's logs", None)
            return add_security_headers(response)

        return route
