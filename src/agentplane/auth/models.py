"""Types of the auth package: the principal, and the API's request and response bodies."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from agentplane.auth import scopes as sc

Role = Literal["owner", "admin", "developer", "viewer"]
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# Requests an hour. A key's default fits a dashboard refreshing a few views every 2 s all
# day; a tenant's leaves room for several such keys and the workers' calls.
KEY_RATE_LIMIT_PER_HOUR: Final = 10_000
TENANT_RATE_LIMIT_PER_HOUR: Final = 100_000


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user in a tenant, through a login session or an API key."""

    tenant_id: UUID
    user_id: UUID | None
    role: str
    scopes: frozenset[str]
    api_key_id: UUID | None

    def can(self, *scopes: str) -> bool:
        return set(scopes) <= self.scopes


@dataclass(frozen=True)
class Identity:
    """An authenticated request: the principal, what /me shows, and its rate limit."""

    principal: Principal
    email: str
    tenant_slug: str
    limit: int
    remaining: int
    reset_seconds: int
    session_id: UUID | None = None
    """The login session (JWT `sid`); None for an API key."""


def normalize_email(value: str) -> str:
    """The address trimmed and lower-cased; ValueError if it is not one."""
    value = value.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value


def _scopes(value: list[str]) -> list[str]:
    bad = sc.unknown(value)
    if bad:
        raise ValueError(f"unknown scopes: {', '.join(bad)}")
    return sorted(set(value))


Email = Annotated[str, AfterValidator(normalize_email)]
Scopes = Annotated[list[str], AfterValidator(_scopes)]
Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{0,98}[a-z0-9]?$")]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginIn(Body):
    email: Email
    password: str = Field(max_length=1024)
    tenant: Slug | None = None
    """Which tenant to sign in to; needed only when the account belongs to several."""
    totp: str | None = Field(default=None, max_length=16)
    """The current one-time code, for an account with two-factor sign-in."""


class MfaSetupIn(Body):
    password: str = Field(max_length=1024)


class MfaSetupOut(BaseModel):
    secret: str
    """Base32, shown once: enter it (or scan the URI) into an authenticator app."""
    otpauth_uri: str


class MfaEnableIn(Body):
    code: str = Field(min_length=6, max_length=16)


class MfaDisableIn(Body):
    password: str = Field(max_length=1024)
    code: str = Field(min_length=6, max_length=16)


class RefreshIn(Body):
    refresh_token: str = Field(max_length=200)


class TokensOut(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "bearer"
    expires_in: int
    tenant_id: UUID
    user_id: UUID


class MeOut(BaseModel):
    user_id: UUID | None
    email: str
    tenant_id: UUID
    tenant_slug: str
    role: str
    scopes: list[str]
    api_key_id: UUID | None


class ApiKeyIn(Body):
    name: str = Field(min_length=1, max_length=100)
    description: str | None = Field(default=None, max_length=1000)
    scopes: Scopes = Field(default_factory=lambda: list(sc.DEFAULT_KEY_SCOPES))
    rate_limit_per_hour: int = Field(default=KEY_RATE_LIMIT_PER_HOUR, ge=0, le=10_000_000)
    llm_rpm: int | None = Field(default=None, ge=1, le=10_000_000)
    """LLM calls per minute (the gateway's and the runtime's under this key); None: no limit."""
    llm_tpm: int | None = Field(default=None, ge=1, le=10**12)
    """LLM tokens per minute, each call counted at its worst case (prompt and max_tokens)."""
    expires_at: datetime | None = None
    user_id: UUID | None = None
    """Whose key this is (default: the caller); the key acts with that member's role."""


class ApiKeyOut(BaseModel):
    id: UUID
    tenant_id: UUID
    user_id: UUID
    name: str
    description: str | None
    key_prefix: str
    scopes: list[str]
    rate_limit_per_hour: int
    llm_rpm: int | None = None
    llm_tpm: int | None = None
    expires_at: datetime | None
    last_used: datetime | None
    is_active: bool
    revoked_at: datetime | None
    created_at: datetime


class ApiKeyCreated(ApiKeyOut):
    key: str
    """The secret. Shown once: only its SHA-256 is stored."""


class AuditEntry(BaseModel):
    id: UUID
    tenant_id: UUID | None
    event_type: str
    user_id: UUID | None
    api_key_id: UUID | None
    resource_type: str | None
    resource_id: str | None
    old_values: Any
    new_values: Any
    details: dict[str, Any]
    ip_address: str | None
    user_agent: str | None
    created_at: datetime


class AuditPage(BaseModel):
    items: list[AuditEntry]
    next_cursor: str | None
