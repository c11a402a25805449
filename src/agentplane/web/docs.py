"""/docs (Swagger UI) and /redoc from assets in the package: no CDN, works offline."""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

from agentplane.web.http import add_security_headers
from agentplane.web.templating import static

router = APIRouter(include_in_schema=False)
_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def _hashes(html: str) -> str:
    """The CSP sources of the page's own inline scripts (Swagger UI's start-up call)."""
    return " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'"
        for s in _SCRIPT.findall(html)
    )


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    response = get_swagger_ui_html(
        openapi_url=request.app.openapi_url,
        title="agentplane API",
        swagger_js_url=static("vendor/swagger-ui/swagger-ui-bundle.js"),
        swagger_css_url=static("vendor/swagger-ui/swagger-ui.css"),
        swagger_favicon_url=static("favicon.svg"),
    )
    csp = (f"default-src 'self'; script-src 'self' {_hashes(response.body.decode())}; "
           "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
           "base-uri 'none'; frame-ancestors 'none'")
    return add_security_headers(response, csp)  # type: ignore[return-value]


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    response = get_redoc_html(
        openapi_url=request.app.openapi_url,
        title="agentplane API",
        redoc_js_url=static("vendor/redoc/redoc.standalone.js"),
        redoc_favicon_url=static("favicon.svg"),
        with_google_fonts=False,
    )
    # ReDoc styles itself inline and searches in a worker it makes from a blob.
    csp = ("default-src 'self'; script-src 'self' blob:; worker-src 'self' blob:; "
           "style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
           "base-uri 'none'; frame-ancestors 'none'")
    return add_security_headers(response, csp)  # type: ignore[return-value]
