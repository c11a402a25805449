"""Every command on a database where nothing exists yet (no schema, no tenant): a command
that needs the schema migrates first, as `agentplane up` does; one that needs something
missing says so in one line with exit code 2. None prints a traceback."""

from __future__ import annotations

import pytest
from scripts import cli_reference

from tests.conftest import cli_env, create_database, drop_database, run_cli

ZERO = "00000000-0000-0000-0000-000000000000"
# Each command with the least it takes; the rest of a command's arguments are its options.
INVOCATIONS: dict[str, list[str]] = {
    "agents create": ["--id", "a", "--name", "A", "--role", "r", "--tenant", "nope"],
    "agents delete": ["a", "--tenant", "nope"],
    "agents list": ["--tenant", "nope"],
    "agents show": ["a", "--tenant", "nope"],
    "agents update": ["a", "--name", "B", "--tenant", "nope"],
    "config": [],
    "db current": [],
    "db downgrade": ["nope"],
    "db history": [],
    "db upgrade": ["nope"],
    "demo": ["--file", "no/such/file.py"],
    "dlq list": [],
    "dlq requeue": [ZERO],
    "doctor": [],
    "events": [ZERO],
    "input-requests answer": [ZERO, "yes", "--tenant", "nope"],
    "input-requests list": ["--tenant", "nope"],
    "jobs cancel": [ZERO],
    "jobs list": [],
    "jobs pause": ["--queue", "default"],
    "jobs resume": ["--queue", "default"],
    "jobs retry": [ZERO],
    "jobs show": [ZERO],
    "key create": ["--tenant", "nope", "--email", "a@b.test", "--name", "k"],
    "key list": ["--tenant", "nope"],
    "key revoke": [ZERO, "--tenant", "nope"],
    "ops health": [],
    "ops partitions": [],
    "ops retention run": [],
    "ops retention set": ["nope", "--days", "3"],
    "ops retention status": [],
    "ops tasks set": ["nope", "--every", "60"],
    "ops tasks status": [],
    "providers add": ["--name", "x", "--type", "offline", "--tenant", "nope"],
    "providers list": ["--tenant", "nope"],
    "providers test": ["offline", "--tenant", "nope"],
    "run": ["hi", "--tenant", "nope"],
    "messages dead": ["--tenant", "nope"],
    "messages list": ["--tenant", "nope"],
    "messages requeue": [ZERO, "--tenant", "nope"],
    "messages send": ["--to", "agent:a", "--type", "t", "--tenant", "nope"],
    "messages show": [ZERO, "--tenant", "nope"],
    "messages tail": ["--count", "1", "--tenant", "nope"],
    "runs cancel": [ZERO, "--tenant", "nope"],
    "runs list": [],
    "runs pause": [ZERO, "--tenant", "nope"],
    "runs resume": [ZERO, "--tenant", "nope"],
    "runs retry": [ZERO, "t", "--tenant", "nope"],
    "runs show": [ZERO],
    "schedules add": ["--tenant", ZERO, "--name", "n", "--cron", "0 3 * * *", "--type", "x"],
    "schedules delete": [ZERO, "--tenant", ZERO],
    "schedules list": [],
    "tenant list": [],
    "tools list": [],
    "usage": ["--tenant", "nope"],
    "user create": ["--tenant", "nope", "--email", "a@b.test"],
    "user list": ["--tenant", "nope"],
    "workflows list": ["--tenant", "nope"],
    "workflows save": ["README.md", "--tenant", "nope"],
    "workflows schema": [],
    "workflows show": ["w", "--tenant", "nope"],
    # Last: it makes the tenant the commands above did not find.
    "tenant create": ["Org", "--slug", "org", "--owner-email", "o@org.test"],
}
SERVING = {
    "up": "serves until stopped: tests/test_up.py starts it on a fresh home",
    "worker": "runs until stopped: tests/queue start it as a process",
}


def test_every_command_is_tried() -> None:
    names = {path for path, _ in cli_reference.commands(cli_reference.root())}
    assert names - set(INVOCATIONS) - set(SERVING) == set()
    assert set(INVOCATIONS) - names == set()


@pytest.fixture
def empty(pg_server, settings):
    made: list[str] = []

    def database(name: str) -> dict[str, str]:
        create_database(pg_server, name, template=None)
        made.append(name)
        return cli_env(settings, AGENTPLANE_DATABASE_NAME=name)

    yield database
    for name in made:
        drop_database(pg_server, name)


@pytest.mark.parametrize("first", ["tenant create", "key create", "runs list"])
def test_a_first_command_migrates_an_empty_database(empty, first: str) -> None:
    env = empty(f"t_empty_{first.replace(' ', '_')}")
    r = run_cli(*first.split(), *INVOCATIONS[first], env=env)
    assert "Traceback" not in r.stderr + r.stdout, r.stderr
    assert r.returncode in (0, 2), r.stderr
    if r.returncode:
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("error: ")
    assert run_cli("db", "current", env=env).stdout.strip().endswith("(head)")


def test_no_command_prints_a_traceback_on_an_empty_database(empty) -> None:
    env = empty("t_empty_every")
    for name, args in INVOCATIONS.items():
        r = run_cli(*name.split(), *args, env=env)
        shown = r.stderr + r.stdout
        assert "Traceback" not in shown, (name, shown)
        assert r.returncode in (0, 1, 2), (name, r.returncode, shown)
        if r.returncode == 2:
            lines = r.stderr.strip().splitlines()
            assert lines and all(line.startswith("error: ") for line in lines), (name, shown)
