"""Programmatic Alembic: upgrade, downgrade, current, history, and the ahead check."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from agentplane.db import revisions
from agentplane.db.endpoints import connect
from agentplane.errors import AgentplaneError, SchemaMismatch, ValidationFailed


class MigrationFailed(AgentplaneError):
    status, type, title = 500, "migration-failed", "Migration failed"

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(app_role: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["app_role"] = app_role
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("-"))


def head() -> str:
    heads = script_directory().get_heads()
    assert len(heads) == 1, f"migrations must have one head, found {heads}"
    return heads[0]


@dataclass
class Migrator:
    """Runs Alembic on the owner connection string."""

    owner: str
    app_role: str

    def _engine(self):
        conninfo = self.owner
        # The check before handing over keeps error messages ours, not SQLAlchemy's.
        connect(conninfo).close()
        return create_engine(
            "postgresql+psycopg://",
            creator=lambda: psycopg.connect(conninfo),
            poolclass=NullPool,
        )

    def _run(self, fn, *args) -> None:
        engine = self._engine()
        try:
            with engine.begin() as connection:
                cfg = alembic_config(self.app_role)
                cfg.attributes["connection"] = connection
                owner = connection.exec_driver_sql("SELECT current_user").scalar_one()
                cfg.attributes["owner_role"] = owner
                fn(cfg, *args)
        finally:
            engine.dispose()

    def current(self) -> str | None:
        with connect(self.owner) as conn:
            return revisions.current(conn)

    def check_not_ahead(self) -> str | None:
        """Refuse a database migrated by a newer agentplane rather than guess."""
        current = self.current()
        if current is None:
            return None
        known = {rev.revision for rev in script_directory().walk_revisions()}
        if current not in known:
            raise SchemaMismatch(
                f"the database is at migration {current}, which this agentplane "
                f"(head {head()}) does not know: it was migrated by a newer version; "
                "install that version (or newer) instead"
            )
        return current

    def upgrade(self, target: str = "head") -> None:
        self.check_not_ahead()
        self._guard(lambda: self._run(command.upgrade, target))

    def downgrade(self, target: str) -> None:
        self.check_not_ahead()
        self._guard(lambda: self._run(command.downgrade, target))

    def is_current(self) -> bool:
        return self.current() == head()

    @staticmethod
    def _guard(fn) -> None:
        logging.getLogger("alembic").setLevel(logging.WARNING)
        try:
            fn()
        except AgentplaneError:
            raise
        except Exception as exc:
            from alembic.util import CommandError
            from sqlalchemy.exc import DBAPIError

            if isinstance(exc, CommandError):
                raise ValidationFailed(str(exc)) from None
            if isinstance(exc, DBAPIError):
                first = str(exc.orig).strip().splitlines()[0]
                raise MigrationFailed(f"migration failed and was rolled back: {first}") from None
            raise


def history() -> list[tuple[str, str | None, str]]:
    """(revision, down revision, message), oldest first."""
    revs = list(script_directory().walk_revisions())
    return [
        (r.revision, r.down_revision if isinstance(r.down_revision, str) else None, r.doc or "")
        for r in reversed(revs)
    ]
