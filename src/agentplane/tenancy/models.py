"""Request and response bodies of the tenancy package."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal
from uuid import UUID

from pydantic import BaseModel, Field, field_validator

from agentplane.auth.models import Body, Email, Role, Scopes, Slug

Plan = Literal["free", "pro", "enterprise"]


class RegisterIn(Body):
    email: Email
    password: str = Field(max_length=1024)
    full_name: str | None = Field(default=None, max_length=255)
    username: str | None = Field(default=None, min_length=1, max_length=254)
    tenant_name: str | None = Field(default=None, min_length=1, max_length=255)
    tenant_slug: Slug | None = None
    invitation: str | None = Field(default=None, max_length=200)
    """An invitation token: join its tenant instead of creating one."""
    totp: str | None = Field(default=None, max_length=16)
    """An existing account with two-factor sign-in joining: its current one-time code."""


class TenantOut(BaseModel):
    id: UUID
    name: str
    slug: str
    plan: str
    token_limit: int | None
    """Tokens a month; None: no limit (the default)."""
    monthly_token_usage: int
    rate_limit_per_hour: int
    settings: dict[str, Any]
    is_active: bool
    created_at: datetime
    updated_at: datetime


class TenantPatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    plan: Plan | None = None
    token_limit: int | None = Field(
        default=None, ge=0, description="tokens a month; null removes the limit"
    )
    rate_limit_per_hour: int | None = Field(default=None, ge=0, le=100_000_000)
    settings: dict[str, Any] | None = Field(default=None, description=(
        "Free-form, but for the keys agentplane reads: `llm_content` (`keep` or `drop`: "
        "whether gateway calls keep their messages and answers) and `llm_cache_ttl_s` "
        "(seconds the gateway's response cache keeps an answer, up to 30 days; 0 or "
        "unset: no cache)."))

    @field_validator("settings", mode="after")
    @classmethod
    def _known_settings(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return value
        if value.get("llm_content", "keep") not in ("keep", "drop"):
            raise ValueError("llm_content must be keep or drop")
        ttl = value.get("llm_cache_ttl_s", 0)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= 30 * 86400:
            raise ValueError("llm_cache_ttl_s must be a whole number of seconds, 0 to 2592000")
        return value


class MemberOut(BaseModel):
    tenant_id: UUID
    user_id: UUID
    email: str
    username: str
    full_name: str | None
    role: str
    permissions: list[str]
    created_at: datetime
    updated_at: datetime


class MemberPatch(Body):
    role: Role | None = None
    permissions: Scopes | None = None


class InvitationIn(Body):
    email: Email
    role: Literal["admin", "developer", "viewer"] = "developer"


class InvitationOut(BaseModel):
    id: UUID
    tenant_id: UUID
    email: str
    role: str
    expires_at: datetime
    accepted_at: datetime | None
    created_at: datetime


class InvitationCreated(InvitationOut):
    token: str
    """Give it to the invitee, who registers with it. Shown once."""


class ProjectIn(Body):
    name: str = Field(min_length=1, max_length=255)
    slug: Slug
    description: str | None = Field(default=None, max_length=10000)
    settings: dict[str, Any] = Field(default_factory=dict)


class ProjectPatch(Body):
    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=10000)
    settings: dict[str, Any] | None = None
    archived: bool | None = None


class ProjectOut(BaseModel):
    id: UUID
    tenant_id: UUID
    name: str
    slug: str
    description: str | None
    settings: dict[str, Any]
    archived: bool
    archived_at: datetime | None
    created_by: UUID | None
    created_at: datetime
    updated_at: datetime


class ProjectMemberIn(Body):
    role: Literal["admin", "developer", "viewer"] = "developer"


class ProjectMemberOut(BaseModel):
    tenant_id: UUID
    project_id: UUID
    user_id: UUID
    role: str
    created_at: datetime
