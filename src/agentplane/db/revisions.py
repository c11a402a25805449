"""The migrations' revisions, read from their files without loading Alembic (loading it
costs a command a third of a second): the latest one, and the one a database is at."""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import psycopg

VERSIONS = Path(__file__).parent / "migrations" / "versions"
_FIELD = re.compile(r'^(revision|down_revision) = (?:"([^"]*)"|None)', re.MULTILINE)


@cache
def latest() -> str:
    """The head: the one revision no other revises (migrate.head() asks Alembic)."""
    revisions: set[str] = set()
    revised: set[str | None] = set()
    for path in VERSIONS.glob("*.py"):
        fields = {m.group(1): m.group(2) for m in _FIELD.finditer(path.read_text())}
        revisions.add(fields["revision"])
        revised.add(fields.get("down_revision"))
    heads = revisions - revised
    assert len(heads) == 1, f"migrations must have one head, found {heads}"
    return heads.pop()


def current(conn: psycopg.Connection) -> str | None:
    """The revision the database is at; None before the first migration."""
    exists = conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()
    if not exists or exists[0] is None:
        return None
    row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
    return row[0] if row else None
