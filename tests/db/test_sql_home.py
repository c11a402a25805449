"""Every function, view, trigger and row-level security policy has one home: a sql/ file
beside the package it belongs to (see agentplane.db.migrations).

In a database migrated from empty, row-level security is turned off and every file is
applied again, as a migration applies it, in one transaction that is rolled back: an
event trigger notes which file defines which object, and the catalog must say the same
before and after. So each object is defined by exactly one file and as that file says,
and the files turn row-level security on wherever it is on. The files' digests, kept by
the revisions that apply them, make a file change without a revision fail too."""

from __future__ import annotations

import collections
import dataclasses
import difflib
import re
from pathlib import Path

import psycopg
import pytest
import sqlalchemy

import agentplane
from agentplane.config import Settings
from agentplane.db import endpoints as ep
from agentplane.db.embedded import EmbeddedServer
from agentplane.db.migrate import script_directory
from agentplane.db.migrations import definitions, digest, read_sql

PACKAGE = Path(agentplane.__file__).parent
KINDS = {"function": "function", "procedure": "function", "view": "view",
         "trigger": "trigger", "policy": "policy"}


def sql_files() -> list[str]:
    """Every sql file of the package, in the order the revisions name them (then any
    no revision names)."""
    named = [path for _, files in revisions_naming() for path in files]
    found = sorted(p.relative_to(PACKAGE).as_posix() for p in PACKAGE.glob("*/sql/*.sql"))
    return list(dict.fromkeys(named + found))


def revisions_naming() -> list[tuple[str, dict[str, str]]]:
    """(revision, its sql_files) for the revisions that apply files, oldest first."""
    scripts = reversed(list(script_directory().walk_revisions()))
    return [(s.revision, dict(s.module.sql_files)) for s in scripts
            if getattr(s.module, "sql_files", None)]


# What the catalog says of each object: (kind, identity) -> its definition.
SNAPSHOT = """
SELECT 'function', (pg_identify_object('pg_proc'::regclass, p.oid, 0)).identity,
       pg_get_functiondef(p.oid)
FROM pg_proc p
WHERE p.pronamespace = 'public'::regnamespace AND p.prokind IN ('f', 'p')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'view', (pg_identify_object('pg_class'::regclass, c.oid, 0)).identity,
       concat_ws(E'\n', pg_get_viewdef(c.oid), c.reloptions::text)
FROM pg_class c WHERE c.relkind = 'v'  -- public's and the seeds' schemas' views
  AND c.relnamespace::regnamespace::text NOT IN ('pg_catalog', 'information_schema')
UNION ALL
SELECT 'trigger', (pg_identify_object('pg_trigger'::regclass, t.oid, 0)).identity,
       concat_ws(E'\n', pg_get_triggerdef(t.oid), 'enabled: ' || t.tgenabled::text)
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal AND t.tgparentid = 0
UNION ALL
SELECT 'policy', (pg_identify_object('pg_policy'::regclass, p.oid, 0)).identity,
       concat_ws(E'\n', CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                 'FOR ' || p.polcmd::text, 'TO ' || p.polroles::regrole[]::text,
                 'USING ' || pg_get_expr(p.polqual, p.polrelid),
                 'WITH CHECK ' || pg_get_expr(p.polwithcheck, p.polrelid))
FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'row security', c.oid::regclass::text,
       concat_ws(' ', CASE WHEN c.relrowsecurity THEN 'enabled' END,
                 CASE WHEN c.relforcerowsecurity THEN 'forced' END)
FROM pg_class c
WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  AND (c.relrowsecurity OR c.relforcerowsecurity)
"""

# Notes each object a command defines, with the file being applied (set per file).
PROBE = """
CREATE SCHEMA sql_home_probe;
CREATE SEQUENCE sql_home_probe.command;
CREATE TABLE sql_home_probe.defined (command bigint, file text, type text, identity text);
CREATE FUNCTION sql_home_probe.note() RETURNS event_trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
DECLARE
    n bigint := nextval('sql_home_probe.command');
BEGIN
    INSERT INTO sql_home_probe.defined
    SELECT n, current_setting('sql_home.file'), c.object_type, c.object_identity
    FROM pg_event_trigger_ddl_commands() c;
END $$;
CREATE EVENT TRIGGER sql_home_probe ON ddl_command_end
    EXECUTE FUNCTION sql_home_probe.note();
"""


@dataclasses.dataclass
class Applied:
    before: dict[tuple[str, str], str]
    """What the database migrated from empty has."""
    after: dict[tuple[str, str], str]
    """The same, once every file was applied again."""
    homes: dict[tuple[str, str], list[str]]
    """The files that define each object (once per statement)."""


@pytest.fixture(scope="module")
def applied(
    pg_server: EmbeddedServer, database_name: str, settings: Settings, endpoints: ep.Endpoints
) -> Applied:
    owner = str(psycopg.conninfo.conninfo_to_dict(endpoints.owner)["user"])
    with psycopg.connect(pg_server.conninfo(dbname=database_name)) as su:
        return apply_again(su, app=settings.app_role, owner=owner)


def apply_again(su: psycopg.Connection, *, app: str, owner: str) -> Applied:
    """Every file applied again, as the owner, in a transaction rolled back."""
    before = snapshot(su)
    # Row-level security off everywhere: the files must turn it on again.
    for kind, table in before:
        if kind == "row security":
            su.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY, "
                       "DISABLE ROW LEVEL SECURITY")
    su.execute(PROBE)
    su.execute(psycopg.sql.SQL("SET ROLE {}").format(psycopg.sql.Identifier(owner)))
    for path in sql_files():
        su.execute("SELECT set_config('sql_home.file', %s, true)", [path])
        su.execute(definitions(path, app=app, owner=owner))
    su.execute("RESET ROLE")
    homes: dict[tuple[str, str], list[str]] = collections.defaultdict(list)
    for file, kind, identity in su.execute(
        "SELECT file, type, identity FROM (SELECT DISTINCT command, file, type, identity"
        " FROM sql_home_probe.defined WHERE type = ANY(%s)) d ORDER BY command",
        [list(KINDS)],
    ):
        homes[(KINDS[kind], identity)].append(file)
    su.execute("DROP EVENT TRIGGER sql_home_probe")
    after = snapshot(su)
    su.rollback()
    return Applied(before, after, dict(homes))


def snapshot(conn: psycopg.Connection) -> dict[tuple[str, str], str]:
    return {(kind, identity): text for kind, identity, text in conn.execute(SNAPSHOT)}


def likely_home(applied: Applied, kind: str, identity: str) -> str:
    """The file that defines most of the objects named like this one."""
    if kind == "policy":
        return "tenancy/sql/policies.sql"
    stem = re.sub(r"^public\.", "", identity).split("_")[0]
    votes = collections.Counter(
        files[0] for (k, other), files in applied.homes.items()
        if k == kind and re.sub(r"^public\.", "", other).split("_")[0] == stem
    )
    return votes.most_common(1)[0][0] if votes else "a sql/ file of the package it belongs to"


def test_each_definition_has_exactly_one_home(applied: Applied) -> None:
    problems = []
    for kind, identity in sorted(applied.before):
        if kind == "row security":
            continue
        files = applied.homes.get((kind, identity), [])
        if not files:
            problems.append(
                f"{kind} {identity} is defined only in a migration: its current definition "
                f"belongs in {likely_home(applied, kind, identity)}, applied by a revision "
                "(see agentplane.db.migrations)"
            )
        elif len(files) > 1:
            problems.append(f"{kind} {identity} is defined {len(files)} times: in "
                            f"{', '.join(files)}; keep one")
    assert not problems, "\n".join(problems)


def test_the_files_define_nothing_a_database_lacks(applied: Applied) -> None:
    extra = sorted(set(applied.homes) - set(applied.before))
    assert not extra, "\n".join(
        f"{kind} {identity}, defined in {', '.join(applied.homes[(kind, identity)])}, is not "
        "in a database migrated from empty: the file is applied by no revision"
        for kind, identity in extra
    )


def test_the_database_defines_each_object_as_its_file_does(applied: Applied) -> None:
    problems = []
    for key in sorted(applied.before):  # what the database lacks: the test above
        was, now = applied.before[key], applied.after.get(key, "")
        if was == now:
            continue
        kind, identity = key
        if kind == "row security":
            problems.append(
                f"row-level security of {identity} is {was or 'off'} in the database, "
                f"{now or 'off'} by the sql files: ENABLE and FORCE it in "
                "tenancy/sql/policies.sql"
            )
            continue
        where = ", ".join(applied.homes.get(key, [])) or "no file"
        diff = "\n".join(difflib.unified_diff(
            was.splitlines(), now.splitlines(), "database migrated from empty", where,
            lineterm=""))
        problems.append(f"{kind} {identity} differs from its definition in {where}: a "
                        f"revision changed it after the file was applied\n{diff}")
    assert not problems, "\n\n".join(problems)


def test_every_sql_file_is_applied_by_a_revision() -> None:
    named = {path for _, files in revisions_naming() for path in files}
    found = {p.relative_to(PACKAGE).as_posix() for p in PACKAGE.glob("*/sql/*.sql")}
    assert not found - named, (
        f"{sorted(found - named)}: no revision applies these (name them in a new "
        "revision's sql_files)"
    )
    assert not named - found, f"{sorted(named - found)}: named by revisions, missing"


def test_a_file_changes_only_with_a_revision_that_applies_it() -> None:
    """A file's statements are those that the last revision naming it applied: a
    database already past that revision would never get a change made since."""
    last: dict[str, tuple[str, str]] = {}
    for revision, files in revisions_naming():
        for path, recorded in files.items():
            last[path] = (revision, recorded)
    problems = []
    for path, (revision, recorded) in sorted(last.items()):
        now = digest(read_sql(path))
        if now != recorded:
            problems.append(
                f"{path} changed after revision {revision} applied it: a database already "
                f"at {revision} will not see the change. Add a revision that names it in "
                f"its sql_files with the digest {now} (and puts back the old definitions "
                "on downgrade); comments alone need none"
            )
    assert not problems, "\n".join(problems)


def test_the_files_run_alike_through_alembic_and_psycopg() -> None:
    """Migrations send the files through SQLAlchemy's text(), which would take a `:name`
    for a parameter."""
    for path in sql_files():
        binds = sqlalchemy.text(read_sql(path)).compile().params
        assert not binds, f"{path}: {sorted(binds)} would be taken for parameters"
