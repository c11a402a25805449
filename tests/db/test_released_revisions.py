"""A revision is never edited once released: a database already past it would not run it
again, so an edit would make databases migrated at different times differ. Each
revision file's sha256 is kept in agentplane/db/migrations/released.txt."""

from __future__ import annotations

import hashlib
from pathlib import Path

from agentplane.db import migrations

MIGRATIONS = Path(migrations.__file__).parent
RELEASED = MIGRATIONS / "released.txt"


def released() -> dict[str, str]:
    """File name -> sha256, as released.txt lists them."""
    entries = {}
    for line in RELEASED.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            sha, name = line.split()
            entries[name] = sha
    return entries


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_released_revisions_are_unchanged() -> None:
    changed = [
        name for name, sha in released().items()
        if not (MIGRATIONS / "versions" / name).exists()
        or sha256(MIGRATIONS / "versions" / name) != sha
    ]
    assert not changed, (
        f"released revisions changed or gone: {', '.join(changed)}. A database already "
        "past a revision never runs it again: undo the edit and make the change in a new "
        "revision instead"
    )


def test_every_revision_is_listed() -> None:
    listed = released()
    new = sorted(p for p in (MIGRATIONS / "versions").glob("*.py") if p.name not in listed)
    assert not new, (
        "revisions not in released.txt (a revision is released once merged; add its "
        "line, and edit it no more):\n"
        + "\n".join(f"{sha256(p)}  {p.name}" for p in new)
    )
