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

from agentplane.db.migrations import sql

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

TERMINAL = ("run.completed", "run.failed", "run.cancelled")

# (what 0009 wrote, what it becomes), in the order they appear in the function.
EDITS = [
    (
        "DECLARE\n    v_last bigint;\nBEGIN\n",
        f"""DECLARE
    v_last bigint;
    v_end integer;
BEGIN
    SELECT min(e.i) INTO v_end FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e(x, i)
    WHERE e.x->>'type' IN ({", ".join(f"'{t}'" for t in TERMINAL)});
    IF v_end < p_n THEN  -- what follows the terminal event is not stored
        p_rows := (SELECT jsonb_agg(e.x ORDER BY e.i)
                   FROM jsonb_array_elements(p_rows) WITH ORDINALITY AS e(x, i)
                   WHERE e.i <= v_end);
        p_n := v_end;
    END IF;
""",
    ),
    (
        "INSERT INTO event_counters AS c (tenant_id, run_id, last_seq)\n"
        "        SELECT r.tenant_id, r.id, p_n FROM runs r",
        "INSERT INTO event_counters AS c (tenant_id, run_id, last_seq, closed)\n"
        "        SELECT r.tenant_id, r.id, p_n, v_end IS NOT NULL FROM runs r",
    ),
    (
        "ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq\n",
        "ON CONFLICT (run_id) DO UPDATE SET last_seq = c.last_seq + EXCLUDED.last_seq,\n"
        "                                           closed = EXCLUDED.closed\n"
        "            WHERE NOT c.closed OR p_rows->0->>'type' = 'run.resumed'\n",
    ),
    (
        "    RETURN v_last;\nEND $$;",
        """    IF v_last IS NULL AND EXISTS (SELECT 1 FROM event_counters
                                  WHERE run_id = p_run AND tenant_id = p_tenant AND closed) THEN
        RETURN 0;
    END IF;
    RETURN v_last;
END $$;""",
    ),
]


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
    function = _earlier()
    for old, new in EDITS:
        assert function.count(old) == 1, old
        function = function.replace(old, new)
    sql("ALTER TABLE event_counters ADD COLUMN closed boolean NOT NULL DEFAULT false")
    # Runs that ended before this revision: their logs close at their terminal event.
    sql(f"""UPDATE event_counters c SET closed = true FROM runs r
            WHERE r.id = c.run_id AND r.status IN ('completed', 'failed', 'cancelled')
              AND EXISTS (SELECT 1 FROM events e WHERE e.run_id = c.run_id
                          AND e.type IN ({", ".join(f"'{t}'" for t in TERMINAL)}))""")
    sql(function)


def downgrade() -> None:
    sql(_earlier())
    sql("ALTER TABLE event_counters DROP COLUMN closed")
