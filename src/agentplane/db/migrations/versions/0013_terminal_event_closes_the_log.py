"""Nothing is appended to a run after its terminal event.

A run's log closes with its first `run.completed`, `run.failed` or `run.cancelled`:
events after it in the same batch, and every later batch, are not stored (followers end
at the terminal event and would never see them). A task still in flight when its run is
cancelled writes its finish like any other; its usage is recorded, its events are not.
Only a `run.resumed` first in a batch opens a closed log again: a failed run whose task
is retried goes on.

`events_append` returns 0 for a closed log (nothing stored), NULL for no such run.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

import importlib
import re

from agentplane.db.migrations import package_sql, sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TERMINAL = ("run.completed", "run.failed", "run.cancelled")


def _earlier() -> str:
    """events_append as revision 0009 made it."""
    module = importlib.import_module("agentplane.db.migrations.versions.0009_finish_batches")
    text = module.UPGRADE.replace("{carry_max}", str(module.CARRY_MAX)).replace(
        "{note_max}", str(module.NOTE_MAX)
    )
    found = re.search(r"CREATE FUNCTION events_append\(.*?\nEND \$\$;", text, re.S)
    assert found is not None
    return found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


def upgrade() -> None:
    sql("ALTER TABLE event_counters ADD COLUMN closed boolean NOT NULL DEFAULT false")
    # Runs that ended before this revision: their logs close at their terminal event.
    sql(f"""UPDATE event_counters c SET closed = true FROM runs r
            WHERE r.id = c.run_id AND r.status IN ('completed', 'failed', 'cancelled')
              AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = c.run_id
                          AND e.type IN ({", ".join(f"'{t}'" for t in TERMINAL)}))""")
    sql(package_sql("events", "functions.sql"))  # events_append as it now is


def downgrade() -> None:
    sql(_earlier())
    sql("ALTER TABLE event_counters DROP COLUMN closed")
