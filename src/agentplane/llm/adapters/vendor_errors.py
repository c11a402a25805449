"""What a vendor's error response says: how long to wait (Retry-After), its code and
message, and whether it means the prompt is over the window or broke a content policy
(the reasons a fallback acts on)."""

from __future__ import annotations

import json
import time

import httpx


def retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after-ms")
    if value:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


def vendor_code(resp: httpx.Response) -> str:
    """The vendor's error code or type (OpenAI's error.code, Anthropic's error.type)."""
    try:
        error = resp.json().get("error")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return ""
    if not isinstance(error, dict):
        return ""
    return " ".join(str(error.get(k) or "") for k in ("code", "type"))


# How vendors say a prompt is over the model's window, or that it broke their content
# policy (OpenAI's and Azure's codes, Anthropic's and vLLM's messages).
_CONTEXT = ("context_length_exceeded", "maximum context length", "context window",
            "prompt is too long", "too many tokens")
_POLICY = ("content_policy_violation", "content_filter", "content management policy",
           "safety system")


def upstream_reason(status: int, code: str, message: str) -> str | None:
    if status not in (400, 403, 413, 422):
        return None
    said = f"{code} {message}".lower()
    if any(s in said for s in _CONTEXT):
        return "context_window"
    if any(s in said for s in _POLICY):
        return "content_policy"
    return None


def vendor_message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return resp.text[:300] or resp.reason_phrase
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str):
        return error
    return json.dumps(body)[:300]
