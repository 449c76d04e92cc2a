"""Unique tasks (#14, part 4): while a task with a key has not ended, enqueue with that
key returns it instead of queueing another; the unique index decides, race-free across
processes. Every write that ends a task frees its key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bgtaskex import tables as t
from bgtaskex.client import Client, connect
from bgtaskex.exceptions import UsageError
from bgtaskex.models import Enqueued, TaskStatus
from tests.support.cli import isolate, run_cli

NOOP = "tests.scripted:Noop"
ROOT = Path(__file__).resolve().parents[2]
RACERS = 8


def test_a_key_is_held_until_its_task_ends(lite: Client) -> None:
    first = lite.enqueue_unique("reindex", [NOOP], unique_key="reindex-users")
    assert first.created
    again = lite.enqueue_unique("reindex", [NOOP], unique_key="reindex-users")
    assert again == Enqueued(first.id, False)
    assert lite.enqueue("reindex", [NOOP], unique_key="reindex-users") == first.id
    other = lite.enqueue_unique("reindex", [NOOP], unique_key="reindex-groups")
    plain = lite.enqueue("reindex", [NOOP])
    assert len({first.id, other.id, plain}) == 3
    assert lite.get(first.id).unique_key == "reindex-users"
    assert "unique key 'reindex-users'" in lite.events(first.id)[0].message
    assert lite.run_once().finished == 3  # the run's final write frees the keys
    assert lite.get(first.id).unique_key is None
    after = lite.enqueue_unique("reindex", [NOOP], unique_key="reindex-users")
    assert after.created and after.id not in (first.id, other.id, plain)


def test_cancel_frees_the_key(lite: Client) -> None:
    task_id = lite.enqueue("x", [NOOP], unique_key="k")
    assert lite.cancel(task_id)
    assert lite.get(task_id).status is TaskStatus.CANCELLED
    assert lite.get(task_id).unique_key is None
    assert lite.enqueue_unique("x", [NOOP], unique_key="k").created


@pytest.mark.parametrize("key", ["", "   ", "k" * 201, 5])
def test_a_bad_key_is_refused(lite: Client, key: object) -> None:
    with pytest.raises(UsageError, match="unique key"):
        lite.enqueue("x", [NOOP], unique_key=key)  # type: ignore[arg-type]
    assert lite.list_tasks() == []


@pytest.mark.parametrize("key", ["k1 ", " k1", "k1\t", "k1\u3000", "k\n1", "k\x001", "k\x7f"])
def test_keys_only_compared_exactly_everywhere_are_taken(client: Client, key: str) -> None:
    """MariaDB's utf8mb4_bin pads with spaces ('k1' = 'k1 ' for its unique index): a key
    with leading or trailing whitespace, or a control character, is refused on every
    backend, so that what is accepted is compared exactly on all of them."""
    held = client.enqueue_unique("x", [NOOP], unique_key="k1")
    with pytest.raises(UsageError, match="leading or trailing whitespace"):
        client.enqueue_unique("x", [NOOP], unique_key=key)
    exact = [client.enqueue_unique("x", [NOOP], unique_key=k) for k in ("K1", "k 1", "k1.")]
    assert all(e.created for e in exact) and held.id not in {e.id for e in exact}
    assert [task.unique_key for task in client.list_tasks()] == ["k1", "K1", "k 1", "k1."]


def test_cli_refuses_a_key_with_a_trailing_space(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate(monkeypatch, tmp_path)
    cli = ["--database-url", f"sqlite:///{tmp_path / 'cli.db'}", "--import", "tests.scripted"]
    refused = run_cli(*cli, "enqueue", "x", NOOP, "--unique-key", "k1 ")
    assert refused.code == 2 and refused.out == "", refused.describe()
    assert len(refused.err.splitlines()) == 1 and "'k1 '" in refused.err, refused.describe()
    assert run_cli(*cli, "list", "--json").json() == []


def test_cli_says_already_queued(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    isolate(monkeypatch, tmp_path)
    cli = ["--database-url", f"sqlite:///{tmp_path / 'cli.db'}", "--import", "tests.scripted"]
    first = run_cli(*cli, "enqueue", "x", NOOP, "--unique-key", "k")
    assert first.code == 0 and first.out.startswith("queued task 1:"), first.describe()
    again = run_cli(*cli, "enqueue", "x", NOOP, "--unique-key", "k")
    assert again.code == 0 and again.out == "already queued: task 1\n", again.describe()
    assert run_cli(*cli, "enqueue", "x", NOOP, "--unique-key", "k", "-q").out == "1\n"
    shown = run_cli(*cli, "enqueue", "x", NOOP, "--unique-key", "k", "--json").json()
    assert (shown["id"], shown["unique_key"]) == (1, "k")
    assert "unique key k" in run_cli(*cli, "show", "1").out
    file = {"name": "f", "actions": [{"ref": NOOP}], "unique_key": "k", "not_before": "2100-01-01Z"}
    again = run_cli(*cli, "enqueue", "--file", "-", stdin=json.dumps(file))
    assert again.out == "already queued: task 1\n", again.describe()
    assert len(run_cli(*cli, "list", "--json").json()) == 1
    file["unique_key"] = "other"
    new = run_cli(*cli, "enqueue", "--file", "-", "--json", stdin=json.dumps(file)).json()
    assert (new["unique_key"], new["not_before"]) == ("other", "2100-01-01T00:00:00Z")


# -- the race ------------------------------------------------------------------------------

# A racer: import and connect, say "ready", wait for "go", enqueue, print what it got.
RACER = """
import json, sys
from bgtaskex.client import connect
client = connect(sys.argv[1], imports=["tests.scripted"])
client.store.has_due_tasks()  # connected, the schema checked: only the enqueue is left
print("ready", flush=True)
sys.stdin.readline()
done = client.enqueue_unique("race", ["tests.scripted:Noop"], unique_key="the-key")
print(json.dumps([done.id, done.created]), flush=True)
"""


def test_processes_enqueue_the_same_key_at_once(db_url: str, tmp_path: Path) -> None:
    """8 processes, released together, enqueue with one key: one task exists, and all of
    them report its id, one of them as created."""
    with connect(db_url):
        pass  # the schema, before the race
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, db_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(RACERS)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            line = racer.stdout.readline().strip()
            assert line == "ready", racer.communicate()[1]
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.write("go\n")
            racer.stdin.flush()
        results = [racer.communicate(timeout=60) for racer in racers]
    finally:
        for racer in racers:
            if racer.poll() is None:
                racer.kill()
                racer.wait()
    for racer, (_out, err) in zip(racers, results, strict=True):
        assert racer.returncode == 0, err
    got = [json.loads(out) for out, _err in results]
    ids = {task_id for task_id, _created in got}
    assert len(ids) == 1, got
    assert sorted(created for _id, created in got) == [False] * (RACERS - 1) + [True]
    with connect(db_url) as client, client.store._engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.tasks)).scalar() == 1
        assert conn.execute(select(func.count()).select_from(t.actions)).scalar() == 1
        assert client.get(ids.pop()).unique_key == "the-key"
