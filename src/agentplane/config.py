"""Settings from AGENTPLANE_* environment variables and an optional TOML file.

Precedence, highest first: explicit arguments, environment, the TOML file
(AGENTPLANE_CONFIG, else <home>/agentplane.toml), defaults.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from agentplane.errors import ConfigError

PLACEHOLDERS = {"", "change-me", "changeme", "secret", "placeholder", "xxx"}
_HOW_TO_MAKE = {
    "secret_key": "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`",
    "encryption_key": "32 random bytes, base64url: "
    "`python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'`",
}


def default_home() -> Path:
    return Path(platformdirs.user_data_dir("agentplane", appauthor=False))


def _config_file() -> Path | None:
    explicit = os.environ.get("AGENTPLANE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    home = Path(os.environ.get("AGENTPLANE_HOME") or default_home()).expanduser()
    candidate = home / "agentplane.toml"
    return candidate if candidate.is_file() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="AGENTPLANE_", extra="ignore")

    env: Literal["development", "production", "test"] = "development"
    home: Path = Field(default_factory=default_home)
    database_url: SecretStr | None = None
    """An external PostgreSQL >= 14 (the owner role); unset means the embedded server."""
    app_database_url: SecretStr | None = None
    """Connection for the application role; unset means the owner URL with SET ROLE."""
    app_role: str = "agentplane_app"
    database_name: str = "agentplane"
    pool_min_size: int = Field(default=2, ge=0)
    pool_max_size: int = Field(default=20, ge=1)
    connect_timeout: float = Field(default=5.0, gt=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8400, ge=0, le=65535)
    secret_key: SecretStr | None = None
    """Signs tokens; generated into <home>/keys on first use when unset."""
    encryption_key: SecretStr | None = None
    """Encrypts secrets at rest (base64url, 32 bytes); generated into <home>/keys when unset."""
    budget_fail_closed: bool = True
    """Refuse LLM calls when their budgets cannot be verified (database busy or down)."""
    budget_lock_timeout_ms: int = Field(default=2000, ge=1)
    budget_reservation_ttl_s: int = Field(default=900, ge=1)
    """A reservation not settled by then (its caller died) is released by the sweeper."""
    llm_default_max_tokens: int = Field(default=1024, ge=1)
    events_persist_llm_delta: bool = False
    """Store llm.delta events (replayable) or only stream them live (the default)."""
    events_keepalive_seconds: float = Field(default=15.0, gt=0)
    """Comment lines sent on quiet event streams, so proxies keep them open."""
    log_level: str = "INFO"
    log_format: Literal["auto", "json", "text"] = "auto"
    embedded_settings: dict[str, str] = Field(default_factory=dict)
    """Extra postgresql.conf settings for the embedded server."""
    embedded_listen: str = ""
    """TCP address for the embedded server to listen on too; empty means socket only."""
    embedded_port: int = Field(default=5432, ge=1, le=65535)
    metrics: bool = True
    """Serve Prometheus metrics at /metrics (on, off)."""
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    """Serve /metrics on this port (on AGENTPLANE_HOST) instead of the API's port."""
    registration: Literal["open", "invite", "closed"] = "closed"
    """Who may sign up over HTTP (POST /v1/auth/register): anyone (open), holders of an
    invitation (invite) or no one (closed). Unset: open in development, else closed."""
    outbound_allow: str = ""
    """Networks that URLs users configure (provider base URLs) may reach although they are
    not public, comma-separated (127.0.0.1/32,10.0.0.0/8); loopback is allowed anyway in
    development. Cloud metadata addresses are never reached."""

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("outbound_allow", mode="after")
    @classmethod
    def _networks(cls, value: str) -> str:
        from agentplane.outbound import parse_networks

        parse_networks(value)
        return value

    @model_validator(mode="before")
    @classmethod
    def _registration_default(cls, data: Any) -> Any:
        # A server reachable by others must not hand out tenants unless told to;
        # a developer's own machine should let `curl .../register` just work.
        if isinstance(data, dict) and data.get("registration") is None:
            env = data.get("env", "development")
            data = {**data, "registration": "open" if env == "development" else "closed"}
        return data

    @model_validator(mode="after")
    def _ports_differ(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(
                "AGENTPLANE_METRICS_PORT must differ from AGENTPLANE_PORT "
                "(unset it to serve /metrics on the API's port)"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _config_file()
        if path is not None:
            if not path.is_file():
                raise ConfigError(f"config file {path} does not exist (AGENTPLANE_CONFIG)")
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    def check_secrets(self) -> None:
        """Refuse placeholder secrets anywhere but development."""
        if self.env == "development":
            return
        for name in ("secret_key", "encryption_key"):
            value: SecretStr | None = getattr(self, name)
            if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDERS:
                raise ConfigError(
                    f"AGENTPLANE_{name.upper()} is a placeholder; set a real secret "
                    f"({_HOW_TO_MAKE[name]}) or unset it to have one generated"
                )

    def masked(self) -> dict[str, Any]:
        """The effective settings, secrets masked, for `agentplane config`."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                out[name] = _mask(name, value.get_secret_value())
            elif isinstance(value, Path):
                out[name] = str(value)
            else:
                out[name] = value
        return out


def _mask(name: str, secret: str) -> str:
    if name.endswith("database_url"):
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        try:
            parts = conninfo_to_dict(secret)
        except Exception:
            return "****"
        if parts.get("password"):
            parts["password"] = "****"
        return make_conninfo(**parts)
    return "****"


@lru_cache
def get_settings() -> Settings:
    try:
        settings = Settings()
    except ConfigError:
        raise
    except Exception as exc:  # pydantic ValidationError: one line per field
        raise ConfigError(f"invalid settings: {_describe(exc)}") from None
    settings.check_secrets()
    return settings


def _describe(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    parts = []
    for err in errors():
        field = ".".join(str(p) for p in err.get("loc", ()))
        if field:
            parts.append(f"AGENTPLANE_{field.upper()}: {err.get('msg')}")
        else:  # a check of several settings names them itself
            parts.append(str(err.get("msg")).removeprefix("Value error, "))
    return "; ".join(parts)
