"""Signing in and out of the dashboard, and switching tenants."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse

from agentplane.auth import login, secrets
from agentplane.auth.models import normalize_email
from agentplane.errors import AgentplaneError, RateLimited, Unauthorized
from agentplane.web import http
from agentplane.web.http import Posted, WebRoute
from agentplane.web.templating import page

router = APIRouter(route_class=WebRoute, include_in_schema=False)
Action = Annotated[Posted, Depends(http.posted)]


def set_session(request: Request, response: Response, access_token: str) -> None:
    settings = http.db_of(request).settings
    claims = secrets.read_access_token(settings, access_token)
    response.set_cookie(
        http.COOKIE,
        secrets.issue_web_session(settings, claims),
        max_age=secrets.WEB_SESSION_TTL_SECONDS,
        httponly=True,
        secure=http.secure_cookies(request),
        samesite="lax",
        path="/",
    )


async def _form(request: Request, *, status: int = 200, error: str | None = None,
                email: str = "", mfa: bool = False, next_: str = "/",
                headers: dict[str, str] | None = None) -> Response:
    token = request.cookies.get(http.SIGNIN_COOKIE) or http.new_signin_token()
    response = await page(request, None, "login.html", status=status, title="Sign in",
                          headers=headers, signin_token=token, error=error, email=email,
                          mfa=mfa, next=http.safe_next(next_))
    response.set_cookie(http.SIGNIN_COOKIE, token, max_age=3600, httponly=True,
                        secure=http.secure_cookies(request), samesite="lax", path="/login")
    return response


@router.get("/login")
async def signin_form(request: Request) -> Response:
    if await http.current_user(request) is not None:
        return RedirectResponse(http.safe_next(request.query_params.get("next")), 303)
    return await _form(request, next_=request.query_params.get("next", "/"))


@router.post("/login")
async def signin(request: Request) -> Response:
    form = await http.read_form(request)
    http.check_signin_token(request, form)
    raw_email, password = form.text("email"), form.get("password", "")
    code = form.text("code").replace(" ", "") or None
    next_ = http.safe_next(form.get("next"))
    try:
        email = normalize_email(raw_email)
    except ValueError:
        return await _form(request, status=401, error=login.BAD_LOGIN,
                           email=raw_email[:254], next_=next_)
    if len(password) > 1024:
        return await _form(request, status=401, error=login.BAD_LOGIN, email=email,
                           next_=next_)
    db = http.db_of(request)
    try:
        tokens = await login.login(db, email, password, None, http.origin(request),
                                          code, first_tenant=True)
    except Unauthorized as exc:
        mfa = bool(exc.extra.get("mfa_required"))
        message = ("Enter the one-time code from your authenticator app."
                   if mfa and not code else exc.detail)
        return await _form(request, status=401, error=message, email=email, mfa=mfa,
                           next_=next_)
    except RateLimited as exc:
        return await _form(request, status=429, error=exc.detail, email=email, next_=next_,
                           headers=exc.headers)
    except AgentplaneError as exc:
        return await _form(request, status=exc.status, error=exc.detail, email=email,
                           next_=next_)
    response = RedirectResponse(next_, status_code=303)
    set_session(request, response, tokens.access_token)
    response.delete_cookie(http.SIGNIN_COOKIE, path="/login")
    return response


@router.post("/logout")
async def signout(request: Request, action: Action) -> Response:
    await login.logout(http.db_of(request), action.user.identity, http.origin(request))
    response = RedirectResponse("/login?notice=signed-out", status_code=303)
    response.delete_cookie(http.COOKIE, path="/")
    return response


@router.post("/switch")
async def switch(request: Request, action: Action) -> Response:
    slug = action.form.text("tenant")[:100]
    tokens = await login.switch_tenant(
        http.db_of(request), action.user.identity, slug, http.origin(request))
    response = RedirectResponse("/?notice=switched", status_code=303)
    set_session(request, response, tokens.access_token)
    return response
