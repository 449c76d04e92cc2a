"""Delayed tasks (#14, part 3): `enqueue(not_before=...)`, `enqueue --at / --in`. A task
is not due before its not_before: the run, the claim, the daemon's poll and the idle
probe pass it over, and `run-once --json` says when it will be due."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bgtaskex import tables as t
from bgtaskex.client import Client
from bgtaskex.exceptions import UsageError
from bgtaskex.models import TaskStatus
from bgtaskex.plan import Routing
from bgtaskex.store.probe import sqlite_idle, sqlite_idle_until
from tests.support.cli import isolate, run_cli

NOOP = "tests.scripted:Noop"


def test_a_delayed_task_waits_for_its_time(client: Client) -> None:
    """On each backend (the due query reads the database server's clock there): the run
    and a claim take the task that is due and leave the delayed one until its time."""
    store = client.store
    delay = 1.5
    later = client.enqueue("later", [NOOP], not_before=timedelta(seconds=delay))
    now_ = client.enqueue("now", [NOOP], type="interactive")
    not_before = client.get(later).not_before
    assert not_before is not None
    assert 0 < (not_before - datetime.now(UTC)).total_seconds() <= delay
    assert store.waiting_interactive_queues() == ["default"]
    assert client.run_once().finished == 1
    assert client.get(now_).status is TaskStatus.FINISHED
    assert client.get(later).status is TaskStatus.CREATED
    assert not store.has_due_tasks()
    assert store.next_task() is None
    assert store.claim("w", "r" * 32, 30) is None
    assert client.next_due_at() == not_before
    deadline = time.monotonic() + 10
    while not store.has_due_tasks():
        assert time.monotonic() < deadline, "the delayed task never became due"
        time.sleep(0.05)
    assert datetime.now(UTC) >= not_before
    assert client.next_due_at() is None
    assert client.run_once().finished == 1
    assert client.get(later).status is TaskStatus.FINISHED


def test_the_daemon_poll_skips_delayed_interactive_tasks(lite: Client) -> None:
    lite.enqueue("later", [NOOP], type="interactive", queue="q", not_before=timedelta(hours=1))
    assert lite.store.waiting_interactive_queues() == []


def test_not_before_must_be_aware_or_a_delta(lite: Client) -> None:
    for bad in (datetime(2030, 1, 1), "tomorrow", 60):
        with pytest.raises(UsageError, match="not_before"):
            lite.enqueue("x", [NOOP], not_before=bad)  # type: ignore[arg-type]
    assert lite.list_tasks() == []
    past = lite.enqueue("past", [NOOP], not_before=datetime(2020, 1, 1, tzinfo=UTC))
    assert lite.get(past).not_before == datetime(2020, 1, 1, tzinfo=UTC)
    assert lite.run_once().finished == 1  # a time gone by is due at once


def test_retry_clears_the_delay(lite: Client) -> None:
    task_id = lite.enqueue("x", [NOOP])
    with lite.store._engine.begin() as conn:  # failed, with a delay still ahead
        conn.execute(
            update(t.tasks)
            .where(t.tasks.c.id == task_id)
            .values(
                status="failed",
                run_order=None,
                ended_at=datetime.now(UTC),
                not_before=datetime.now(UTC) + timedelta(hours=1),
            )
        )
    lite.retry(task_id)
    assert lite.get(task_id).not_before is None
    assert lite.run_once().finished == 1


def test_a_delayed_task_is_not_stuck_nor_the_oldest_waiting(lite: Client) -> None:
    """`check` and `stats` count a task as waiting from when it is due."""
    old = datetime.now(UTC) - timedelta(days=2)
    delayed = lite.enqueue("delayed", [NOOP], not_before=timedelta(days=1))
    due = lite.enqueue("due", [NOOP], not_before=old + timedelta(hours=1))
    with lite.store._engine.begin() as conn:
        conn.execute(update(t.tasks).values(created_at=old, updated_at=old))
    assert lite.store.admin.stuck_tasks(datetime.now(UTC) - timedelta(hours=1)) == (1, [due])
    assert lite.stats().oldest_waiting == old + timedelta(hours=1)
    assert lite.get(delayed).status is TaskStatus.CREATED


def test_the_idle_probe_knows_when_the_next_task_is_due(lite: Client) -> None:
    url = lite.settings.url
    assert sqlite_idle_until(url) == (True, None)
    first = lite.enqueue("a", [NOOP], queue="a", not_before=timedelta(minutes=30))
    lite.enqueue("b", [NOOP], queue="b", not_before=timedelta(minutes=10))
    at_b = lite.list_tasks(where=None)[1].not_before
    assert sqlite_idle(url)  # nothing due now
    assert sqlite_idle_until(url) == (True, at_b)
    assert sqlite_idle_until(url, routing=Routing(queues=("a",)))[1] == (lite.get(first).not_before)
    assert sqlite_idle_until(url, routing=Routing(excluded=("a", "b"))) == (True, None)
    lite.enqueue("c", [NOOP], queue="a", not_before=datetime.now(UTC))
    assert sqlite_idle_until(url) == (False, None)
    assert sqlite_idle_until(url, routing=Routing(queues=("b",)))[0]


# -- the CLI -------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The global options of an in-process `bgtaskex` on an SQLite file."""
    isolate(monkeypatch, tmp_path)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    return ["--database-url", url, "--import", "tests.scripted"]


def test_enqueue_in_and_at(cli: list[str]) -> None:
    before = datetime.now(UTC)
    task = run_cli(*cli, "enqueue", "soon", NOOP, "--in", "10m", "--json").json()
    not_before = datetime.fromisoformat(task["not_before"])
    assert before + timedelta(minutes=10) <= not_before <= datetime.now(UTC) + timedelta(minutes=10)
    at = run_cli(*cli, "enqueue", "xmas", NOOP, "--at", "2999-12-24T06:00Z", "--json").json()
    assert at["not_before"] == "2999-12-24T06:00:00Z"
    shown = run_cli(*cli, "enqueue", "x", NOOP, "--in", "1h")
    assert shown.code == 0 and ", due " in shown.out, shown.describe()
    listed = run_cli(*cli, "list")
    assert "DUE" in listed.out, listed.describe()
    assert re.search(r" in (9m5\ds|10m00s) ", listed.out), listed.describe()
    assert "due 2999-12-24 06:00:00 UTC" in run_cli(*cli, "show", at["id"]).out
    report = run_cli(*cli, "run-once", "--json").json()
    assert report["idle"] is True
    assert report["next_due_at"] == task["not_before"]
    assert "next due at" in run_cli(*cli, "run-once").out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--at", "2h"), "for a delay use --in 2h"),
        (("--at", "someday"), "--at: expected"),
        (("--at", "2999-01-01", "--in", "1m"), "not both"),
        (("--in", "-5m"), "duration"),
    ],
)
def test_enqueue_refuses_a_bad_time(cli: list[str], args: tuple[str, ...], message: str) -> None:
    result = run_cli(*cli, "enqueue", "x", NOOP, *args)
    assert result.code == 2, result.describe()
    assert message in result.err and "Traceback" not in result.err, result.describe()
    assert run_cli(*cli, "list", "--json").json() == []


def test_run_once_json_after_a_run_that_found_nothing_due(
    pg_schema_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No probe on PostgreSQL: the run happens, finds nothing, and still says when."""
    isolate(monkeypatch, tmp_path)
    cli = ["--database-url", pg_schema_url, "--import", "tests.scripted"]
    task = run_cli(*cli, "enqueue", "soon", NOOP, "--in", "1h", "--json").json()
    report = run_cli(*cli, "run-once", "--json", "--lock-file", tmp_path / "lock").json()
    assert report["run_id"] is not None and report["actions"] == 0
    assert report["next_due_at"] == task["not_before"]
