"""The operators' features against real databases (SQLite and PostgreSQL): list filters,
progress, show, retry, cancel, purge and retention, stats, check, run-once --json, and
the CLI's help and bad usage.

Commands run in-process through `bgtaskex.cli._main` (`run_cli` of tests/support/cli.py:
the real argument parsing and exit-code mapping, output captured); the state they act on
is built with the Python client and real runs (`client.run_once()`), and checked with the
client or SQL. Processes, locks held by other processes and terminals are in
tests/acceptance.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Connection, text, update

from bgtaskex import tables as t
from bgtaskex.cli import cli
from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from bgtaskex.exceptions import InvalidState, TaskNotFound
from bgtaskex.models import TaskFilter
from bgtaskex.run.file_lock import RunLock
from bgtaskex.store import Store
from bgtaskex.store.probe import sqlite_idle
from bgtaskex.views import stats_dict
from tests.scripted import calls
from tests.support.cli import CliResult, run_cli

SCRIPTED = "tests.scripted:Scripted"
NOOP = "tests.scripted:Noop"
LOOPER = "tests.ops_actions:Looper"
IMPORTS = ("--import", "tests.scripted", "--import", "tests.ops_actions")

TASK_FIELDS = {
    "id",
    "name",
    "type",
    "queue",
    "status",
    "current_rank",
    "last_run_id",
    "created_at",
    "updated_at",
    "ended_at",
    "cancel_requested_at",
    "actions",
}
ACTION_FIELDS = {
    "rank",
    "ref",
    "status",
    "attempts",
    "params",
    "started_at",
    "ended_at",
    "progress",
    "elapsed",
    "eta_seconds",
}
SUMMARY_FIELDS = {
    "run_id",
    "started_at",
    "budget",
    "lock_wait",
    "elapsed",
    "finished",
    "paused",
    "failed",
    "errored",
    "cancelled",
    "lost",
    "actions",
    "purged",
    "left_waiting",
    "missing_modules",
    "max_overrun",
    "idle",
    "next_due_at",
}


# -- helpers ---------------------------------------------------------------------------


Result = CliResult
Bg = Callable[..., Result]


@pytest.fixture
def bg(settings: Settings, isolated: None, monkeypatch: pytest.MonkeyPatch) -> Bg:
    """`bg("list", "--json")`: the CLI on the test's database (and its lock file)."""
    assert settings.lock_file is not None and settings.database_url is not None
    monkeypatch.setenv("BGTASKEX_LOCK_FILE", settings.lock_file)
    url = settings.database_url

    def run(*args: object) -> Result:
        return run_cli("--database-url", url, *IMPORTS, *args)

    return run


def ok(result: Result) -> Result:
    assert result.code == 0, result
    assert "Traceback" not in result.err, result
    return result


def one_error_line(result: Result, code: int) -> str:
    assert result.code == code, result
    assert "Traceback" not in result.err, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result
    assert lines[0].startswith("bgtaskex: error: "), result
    return lines[0]


def scripted(log: str, name: str = "A", **plan: list[str]) -> tuple[str, dict[str, Any]]:
    return SCRIPTED, {"name": name, "log": log, "plan": plan}


def failing(log: str, name: str = "F") -> tuple[str, dict[str, Any]]:
    """Fails in the second run (execute raises, change_params_on_error gives up); once
    retried, the next init_params and execute succeed."""
    return scripted(log, name, execute=["raise", "true"], change=["false"])


def looper(**params: Any) -> tuple[str, dict[str, Any]]:
    return LOOPER, params


def sql_write(store: Store, statement: Callable[[Connection], Any]) -> None:
    """Write behind the store's back (to age timestamps, say)."""
    with store._engine.begin() as conn:
        statement(conn)


def set_task(store: Store, task_id: int, **values: Any) -> None:
    sql_write(
        store,
        lambda conn: conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(values)),
    )


def set_actions(store: Store, task_id: int, **values: Any) -> None:
    sql_write(
        store,
        lambda conn: conn.execute(
            update(t.actions).where(t.actions.c.task_id == task_id).values(values)
        ),
    )


def scalar(store: Store, statement: str, **binds: Any) -> Any:
    with store._engine.connect() as conn:
        return conn.execute(text(statement), binds).scalar_one()


def rows_of(store: Store, task_id: int) -> tuple[int, int]:
    """(actions, events) rows of a task id."""
    return (
        scalar(store, "SELECT count(*) FROM bgtaskex_actions WHERE task_id = :i", i=task_id),
        scalar(store, "SELECT count(*) FROM bgtaskex_events WHERE task_id = :i", i=task_id),
    )


def orphans(store: Store) -> tuple[int, int]:
    """Actions and events rows whose task is gone."""
    return (
        scalar(
            store,
            "SELECT count(*) FROM bgtaskex_actions "
            "WHERE task_id NOT IN (SELECT id FROM bgtaskex_tasks)",
        ),
        scalar(
            store,
            "SELECT count(*) FROM bgtaskex_events "
            "WHERE task_id NOT IN (SELECT id FROM bgtaskex_tasks)",
        ),
    )


def ids(result: Result) -> list[int]:
    return [task["id"] for task in result.json()]


def table_ids(result: Result) -> list[int]:
    """The ID column of a human `list`, top to bottom."""
    lines = ok(result).lines()
    assert lines[0].split()[:2] == ["ID", "NAME"], result
    return [int(line.split()[0]) for line in lines[1:] if line.split()[0].isdigit()]


def status_of(client: Client, task_id: int) -> tuple[str, list[str]]:
    task = client.get(task_id)
    return str(task.status), [str(a.status) for a in task.actions]


def ago(**delta: float) -> datetime:
    return datetime.now(UTC) - timedelta(**delta)


# -- 1. list -----------------------------------------------------------------------------


def test_list_order_and_status_type_queue_filters(client: Client, bg: Bg, calls_log: str) -> None:
    finished = client.enqueue("fin", [NOOP], queue="q1")
    paused = client.enqueue("pau", [scripted(calls_log, "P", execute=["false"])], queue="q1")
    failed = client.enqueue("fai", [failing(calls_log)], queue="q2")
    running = client.enqueue("run", [scripted(calls_log, "R", execute=["raise"])], queue="q2")
    client.run_once()
    client.run_once()  # failed fails; running raises again; paused pauses again
    created = client.enqueue("cre", [NOOP], queue="q2")
    interactive = client.enqueue("int", [NOOP], type="interactive", queue="q1")
    assert status_of(client, running)[0] == "running"
    assert status_of(client, paused)[0] == "paused"
    assert status_of(client, failed)[0] == "failed"

    # waiting tasks in the order the run takes them, then ended ones, newest first
    everything = [interactive, running, paused, created, failed, finished]
    assert ids(bg("list", "--json")) == everything
    assert table_ids(bg("list")) == everything

    assert ids(bg("list", "--status", "active", "--json")) == [
        interactive,
        running,
        paused,
        created,
    ]
    assert ids(bg("list", "--status", "failed", "--status", "finished", "--json")) == [
        failed,
        finished,
    ]
    assert ids(bg("list", "--status", "paused", "--status", "running", "--json")) == [
        running,
        paused,
    ]
    assert ids(bg("list", "--type", "interactive", "--json")) == [interactive]
    assert ids(bg("list", "--type", "cron", "--status", "active", "--json")) == [
        running,
        paused,
        created,
    ]
    assert ids(bg("list", "--queue", "q2", "--json")) == [running, created, failed]
    assert ids(bg("list", "--queue", "q1", "--queue", "q2", "--status", "failed", "--json")) == [
        failed
    ]
    assert ids(bg("list", "--queue", "q1", "--status", "active", "--json")) == [
        interactive,
        paused,
    ]


def test_list_name_glob(client: Client, bg: Bg) -> None:
    names = ["report", "REPORT-daily", "rep%rt", "rep_rt", "repXrt", "backup", "back\\up"]
    by_name = {name: client.enqueue(name, [NOOP]) for name in names}

    def matching(glob: str) -> set[str]:
        found = set(ids(bg("list", "--name", glob, "--json")))
        return {name for name, tid in by_name.items() if tid in found}

    assert matching("report*") == {"report", "REPORT-daily"}  # any case
    assert matching("*DAILY") == {"REPORT-daily"}
    assert matching("rep?rt") == {"report", "rep%rt", "rep_rt", "repXrt"}
    assert matching("rep%rt") == {"rep%rt"}  # % is a literal character
    assert matching("rep_rt") == {"rep_rt"}  # so is _
    assert matching("%") == set()
    assert matching("BACKUP") == {"backup"}
    assert matching("back\\up") == {"back\\up"}  # and a backslash
    assert matching("back?up") == {"back\\up"}
    assert matching("*") == set(names)


def test_list_since_until(client: Client, bg: Bg) -> None:
    old = client.enqueue("old", [NOOP])
    new = client.enqueue("new", [NOOP])
    set_task(client.store, old, created_at=ago(days=3), updated_at=ago(days=3))
    local_today = datetime.now().astimezone().date()
    yesterday = (local_today - timedelta(days=1)).isoformat()
    four_days_ago = (local_today - timedelta(days=4)).isoformat()

    assert ids(bg("list", "--since", "2h", "--json")) == [new]
    assert ids(bg("list", "--until", "2h", "--json")) == [old]
    assert ids(bg("list", "--until", yesterday, "--json")) == [old]
    assert ids(bg("list", "--since", four_days_ago, "--json")) == [old, new]
    assert ids(bg("list", "--since", four_days_ago, "--until", yesterday, "--json")) == [old]
    assert ids(bg("list", "--since", "1d", "--until", "1h", "--json")) == []


def test_list_limit_says_how_many_more(client: Client, bg: Bg) -> None:
    tids = [client.enqueue(f"t{i}", [NOOP]) for i in range(5)]
    limited = ok(bg("list", "--limit", "2"))
    assert table_ids(limited) == tids[:2]
    assert limited.lines()[-1].startswith("... and 3 more"), limited
    assert ids(bg("list", "--limit", "2", "--json")) == tids[:2]
    exact = ok(bg("list", "--limit", "5"))
    assert table_ids(exact) == tids
    assert "more" not in exact.out
    narrowed = ok(bg("list", "--limit", "1", "--name", "t[01]*"))  # no [] in globs: no match
    assert narrowed.lines() and narrowed.lines()[0].startswith("no tasks"), narrowed


def test_list_empty_is_one_friendly_line(client: Client, bg: Bg) -> None:
    empty = ok(bg("list"))
    assert len(empty.lines()) == 1 and empty.lines()[0].startswith("no tasks"), empty
    assert bg("list", "--json").json() == []
    client.enqueue("t", [NOOP])
    nothing = ok(bg("list", "--status", "failed"))
    assert len(nothing.lines()) == 1 and nothing.lines()[0].startswith("no tasks"), nothing
    assert "match" in nothing.out
    assert bg("list", "--status", "failed", "--json").json() == []


def test_list_json_has_stable_fields(client: Client, bg: Bg) -> None:
    tid = client.enqueue("t", [NOOP, looper(total=2, step=0.0)], queue="q")
    (task,) = bg("list", "--json").json()
    assert set(task) >= TASK_FIELDS, sorted(task)
    assert task["id"] == tid and task["cancel_requested_at"] is None
    for action in task["actions"]:
        assert set(action) >= ACTION_FIELDS, sorted(action)
        assert action["progress"] is None and action["eta_seconds"] is None
        assert action["elapsed"] == 0
    for stamp in (task["created_at"], task["updated_at"]):
        assert stamp.endswith("Z")
        datetime.fromisoformat(stamp.replace("Z", "+00:00"))


# -- 2. progress -------------------------------------------------------------------------


def test_progress_is_persisted_and_shown(client: Client, bg: Bg) -> None:
    tid = client.enqueue("slow", [looper(total=10, per_call=4, step=0.02)])
    assert client.run_once().paused == 1

    task = bg("show", tid, "--json").json()
    assert task["status"] == "paused"
    (action,) = task["actions"]
    assert action["status"] == "active"
    assert action["progress"] == {
        "done": 4,
        "total": 10,
        "fraction": pytest.approx(0.4),
        "message": "step 4",
    }
    first_elapsed = action["elapsed"]
    assert first_elapsed >= 0.07  # four steps of 20 ms in execute
    assert action["eta_seconds"] == pytest.approx(6 * first_elapsed / 4)
    assert action["params"]["i"] == 4

    listed = ok(bg("list"))
    (row,) = [line for line in listed.lines() if line.split()[0] == str(tid)]
    assert "40%" in row.split(), listed

    shown = ok(bg("show", tid))
    (bar,) = [line for line in shown.lines() if "40%" in line]
    assert "█" in bar and "░" in bar, shown
    assert "4/10" in bar and "/s" in bar and "step 4" in bar, shown

    client.run_once()
    (action,) = bg("show", tid, "--json").json()["actions"]
    assert action["progress"]["done"] == 8 and action["progress"]["message"] == "step 8"
    assert action["elapsed"] > first_elapsed + 0.07  # execute time adds up over runs
    assert action["eta_seconds"] == pytest.approx(2 * action["elapsed"] / 8)
    assert "80%" in ok(bg("list")).out

    assert client.run_once().finished == 1
    task = bg("show", tid, "--json").json()
    (action,) = task["actions"]
    assert task["status"] == "finished" and action["status"] == "done"
    assert action["progress"]["done"] == 10 and action["progress"]["fraction"] == 1
    assert action["eta_seconds"] is None  # not running any more


def test_progress_without_total(client: Client, bg: Bg) -> None:
    tid = client.enqueue("open-ended", [looper(total=None, per_call=3, step=0.01)])
    client.run_once()
    (action,) = bg("show", tid, "--json").json()["actions"]
    assert action["progress"] == {"done": 3, "total": None, "fraction": None, "message": "step 3"}
    assert action["eta_seconds"] is None
    shown = ok(bg("show", tid))
    assert any("3 done" in line and "step 3" in line for line in shown.lines()), shown


# -- 3. show -----------------------------------------------------------------------------


def test_show_params_history_and_tracebacks(client: Client, bg: Bg, calls_log: str) -> None:
    spec = scripted(calls_log, "A", execute=["raise"])
    spec[1]["nested"] = {"depth": [1, 2], "label": "é"}
    tid = client.enqueue("story", [spec, NOOP])
    client.run_once()  # execute raises: the error and its traceback are in the history

    shown = ok(bg("show", tid))
    lines = [line.rstrip() for line in shown.lines()]
    assert lines[0].startswith(f"task {tid} story") and "running" in lines[0], shown
    # params, pretty-printed, one key per line
    assert '  "nested": {' in shown.out, shown
    assert any(line.strip() == '"depth": [' for line in lines), shown
    assert any(line.strip() == '"label": "é"' for line in lines), shown
    assert any("tests.scripted:Noop" in line and "pending" in line for line in lines), shown
    # the history, oldest first
    history = [line for line in lines if line[:4].isdigit()]
    assert "∅ → created" in history[0], shown
    assert any("created → starting" in line for line in history), shown
    assert any("starting → running" in line for line in history), shown
    assert any("execute raised RuntimeError" in line for line in history), shown
    assert "Traceback (most recent call last)" not in shown.out
    assert lines[-1].strip() == "(tracebacks hidden: add --verbose)", shown

    verbose = ok(bg("show", tid, "--verbose"))
    assert "Traceback (most recent call last)" in verbose.out
    assert "RuntimeError: A.execute scripted failure #1" in verbose.out
    assert "tracebacks hidden" not in verbose.out

    task = bg("show", tid, "--json").json()
    assert set(task) >= TASK_FIELDS | {"events"}
    errors = [e for e in task["events"] if e["error"]]
    assert len(errors) == 1 and errors[0]["rank"] == 1
    assert "Traceback (most recent call last)" in errors[0]["error"]
    assert task["events"][0]["new_status"] == "created"


def test_show_unknown_task(bg: Bg) -> None:
    assert "no task with id 999" in one_error_line(bg("show", 999), 3)
    one_error_line(bg("show", 999, "--json"), 3)


# -- 4. retry ----------------------------------------------------------------------------


def test_retry_failed_task_runs_to_finished(client: Client, bg: Bg, calls_log: str) -> None:
    tid = client.enqueue("flaky", [failing(calls_log, "A"), NOOP])
    client.run_once()
    client.run_once()
    assert status_of(client, tid) == ("failed", ["failed", "done"])
    assert client.get(tid).actions[0].attempts == 1
    assert calls(calls_log) == [("A", "init"), ("A", "execute"), ("A", "change")]

    retried = ok(bg("retry", tid))
    assert retried.lines() == [f"task {tid} queued again (its failed actions)"]
    task = client.get(tid)
    assert (task.status, task.current_rank, task.ended_at) == ("created", None, None)
    first, second = task.actions
    assert (first.status, first.attempts, first.ended_at) == ("pending", 0, None)
    assert first.params["change_calls"] == 1  # params are kept as they were
    assert second.status == "done"  # actions that did not fail are not run again
    last = client.events(tid)[-1]
    assert (last.rank, last.old_status, last.new_status) == (None, "failed", "created")
    assert last.message.startswith("retried")
    assert ids(bg("list", "--status", "active", "--json")) == [tid]

    summary = client.run_once()
    assert summary.finished == 1
    assert calls(calls_log)[3:] == [("A", "init"), ("A", "execute")]
    assert status_of(client, tid) == ("finished", ["done", "done"])


def test_retry_refuses_tasks_that_did_not_fail(client: Client, bg: Bg, calls_log: str) -> None:
    finished = client.enqueue("fine", [NOOP])
    failed = client.enqueue("bad", [failing(calls_log)])
    client.run_once()
    client.run_once()
    waiting = client.enqueue("waiting", [NOOP])

    for tid, status in ((finished, "finished"), (waiting, "created")):
        line = one_error_line(bg("retry", tid), 5)
        assert f"task {tid}" in line and status in line, line
    assert "no task with id 999" in one_error_line(bg("retry", 999), 3)
    assert status_of(client, finished)[0] == "finished"
    assert status_of(client, waiting)[0] == "created"

    # several ids: each is tried; the exit code is that of the error
    mixed = bg("retry", failed, finished)
    assert mixed.code == 5, mixed
    assert mixed.lines() == [f"task {failed} queued again (its failed actions)"]
    assert len(mixed.err.strip().splitlines()) == 1, mixed
    assert status_of(client, failed)[0] == "created"
    with pytest.raises(InvalidState):
        client.retry(finished)


def test_retry_from_start(client: Client, bg: Bg, calls_log: str) -> None:
    first = scripted(calls_log, "A")
    second = failing(calls_log, "B")
    tid = client.enqueue("chain", [first, second])
    client.run_once()
    client.run_once()
    assert status_of(client, tid) == ("failed", ["done", "failed"])
    assert client.get(tid).actions[0].params["execute_calls"] == 1
    before = len(calls(calls_log))

    assert ok(bg("retry", tid, "--from-start")).lines() == [
        f"task {tid} queued again (from the start)"
    ]
    task = client.get(tid)
    assert task.status == "created"
    assert [(a.status, a.attempts, a.progress) for a in task.actions] == [("pending", 0, None)] * 2
    assert [a.params for a in task.actions] == [first[1], second[1]]  # as enqueued

    assert client.run_once().finished == 1
    assert calls(calls_log)[before:] == [
        ("A", "init"),
        ("A", "execute"),
        ("B", "init"),
        ("B", "execute"),
    ]  # init_params again for every action
    assert status_of(client, tid) == ("finished", ["done", "done"])
    assert client.get(tid).actions[0].params["init_calls"] == 2


def test_retry_all_failed_with_filters(client: Client, bg: Bg, calls_log: str) -> None:
    mine = client.enqueue("mine", [failing(calls_log, "M")], queue="reports")
    other = client.enqueue("other", [failing(calls_log, "O")], queue="mail")
    fine = client.enqueue("fine", [NOOP], queue="reports")
    client.run_once()
    client.run_once()
    assert [status_of(client, i)[0] for i in (mine, other, fine)] == [
        "failed",
        "failed",
        "finished",
    ]

    result = ok(bg("retry", "--all-failed", "--queue", "reports"))
    assert result.lines() == ["1 failed task(s) queued again (its failed actions)"]
    assert [status_of(client, i)[0] for i in (mine, other, fine)] == [
        "created",
        "failed",
        "finished",
    ]
    nothing = ok(bg("retry", "--all-failed", "--queue", "reports"))
    assert nothing.lines()[0].startswith("0 failed task(s)"), nothing
    assert ok(bg("retry", "--all-failed", "--name", "OTH*")).lines()[0].startswith("1 failed")
    assert status_of(client, other)[0] == "created"


# -- 5. cancel ---------------------------------------------------------------------------


def test_cancel_created_and_paused_tasks_at_once(client: Client, bg: Bg) -> None:
    paused = client.enqueue("half", [looper(total=5, per_call=1, step=0.0), NOOP])
    client.run_once()
    assert status_of(client, paused) == ("paused", ["active", "pending"])
    created = client.enqueue("new", [NOOP, NOOP])

    result = ok(bg("cancel", created, paused))
    assert result.lines() == [f"task {created} cancelled", f"task {paused} cancelled"]
    assert status_of(client, created) == ("cancelled", ["cancelled", "cancelled"])
    assert status_of(client, paused) == ("cancelled", ["cancelled", "cancelled"])
    for tid in (created, paused):
        task = client.get(tid)
        assert task.ended_at is not None and task.cancel_requested_at is not None
        last = client.events(tid)[-1]
        assert (last.rank, last.new_status) == (None, "cancelled")
    assert client.get(paused).actions[0].params["i"] == 1  # the saved work is kept

    summary = client.run_once()  # nothing left to do
    assert (summary.finished, summary.cancelled, summary.actions) == (0, 0, 0)
    assert status_of(client, paused)[0] == "cancelled"
    assert ids(bg("list", "--status", "cancelled", "--json")) == [created, paused]


def test_cancel_refuses_ended_tasks(client: Client, bg: Bg) -> None:
    finished = client.enqueue("done", [NOOP])
    client.run_once()
    line = one_error_line(bg("cancel", finished), 5)
    assert f"task {finished}" in line and "finished" in line, line
    cancelled = client.enqueue("gone", [NOOP])
    ok(bg("cancel", cancelled))
    one_error_line(bg("cancel", cancelled), 5)
    assert "no task with id 999" in one_error_line(bg("cancel", 999), 3)
    assert status_of(client, finished)[0] == "finished"
    # several ids: an error does not stop the others; the exit code is the error's
    first, second = client.enqueue("x", [NOOP]), client.enqueue("y", [NOOP])
    mixed = bg("cancel", first, 999, second)
    assert mixed.code == 3, mixed
    assert mixed.lines() == [f"task {first} cancelled", f"task {second} cancelled"]
    assert len(mixed.err.strip().splitlines()) == 1, mixed


def test_cancel_task_left_running_by_a_dead_run(client: Client, bg: Bg, calls_log: str) -> None:
    tid = client.enqueue("orphan", [scripted(calls_log, execute=["raise"])])
    client.run_once()  # execute died: left `running`, and no run holds the lock
    assert status_of(client, tid) == ("running", ["active"])
    assert ok(bg("cancel", tid)).lines() == [f"task {tid} cancelled"]
    assert status_of(client, tid) == ("cancelled", ["cancelled"])
    before = calls(calls_log)
    client.run_once()
    assert calls(calls_log) == before


def test_cancel_while_the_lock_is_held_is_done_by_the_run(
    client: Client, bg: Bg, settings: Settings, calls_log: str
) -> None:
    """A `running` task while a run holds the lock may be under execute right now: the
    cancel is only requested, and the run ends the task without calling any hook."""
    tid = client.enqueue("busy", [scripted(calls_log, execute=["raise", "true"])])
    client.run_once()
    assert status_of(client, tid)[0] == "running"
    lock = RunLock(settings.lock_path)
    lock.acquire()
    try:
        result = ok(bg("cancel", tid))
        assert "next checkpoint" in result.out and len(result.lines()) == 1, result
        task = client.get(tid)
        assert task.status == "running" and task.cancel_requested_at is not None
        assert "cancel requested" in client.events(tid)[-1].message
        ok(bg("cancel", tid))  # asking twice is harmless
    finally:
        lock.release()
    before = calls(calls_log)
    summary = client.run_once()
    assert summary.cancelled == 1 and summary.actions == 0
    assert calls(calls_log) == before
    assert status_of(client, tid) == ("cancelled", ["cancelled"])
    assert client.events(tid)[-1].new_status == "cancelled"
    assert client.events(tid)[-1].run_id == summary.run_id


# -- 6. purge and retention --------------------------------------------------------------


def _ended_mix(client: Client, calls_log: str) -> dict[str, int]:
    made = {
        "fin1": client.enqueue("fin-one", [NOOP], queue="a"),
        "fin2": client.enqueue("fin-two", [NOOP, NOOP], queue="a"),
        "failed": client.enqueue("bad", [failing(calls_log)], queue="b"),
        "paused": client.enqueue("half", [looper(total=3, per_call=1, step=0.0)], queue="a"),
    }
    client.run_once()
    client.run_once()
    made["cancelled"] = client.enqueue("stop", [NOOP], queue="a")
    client.cancel(made["cancelled"])
    made["created"] = client.enqueue("todo", [NOOP], queue="b")
    expected = {
        "fin1": "finished",
        "fin2": "finished",
        "failed": "failed",
        "paused": "paused",
        "cancelled": "cancelled",
        "created": "created",
    }
    assert {k: status_of(client, v)[0] for k, v in made.items()} == expected
    return made


def test_purge_deletes_only_ended_tasks_with_their_rows(
    client: Client, bg: Bg, calls_log: str
) -> None:
    made = _ended_mix(client, calls_log)
    store = client.store
    kept = {k: rows_of(store, made[k]) for k in ("paused", "created")}

    result = ok(bg("purge", "--all", "--yes"))
    assert result.lines() == ["deleted 4 ended task(s)"]
    assert sorted(ids(bg("list", "--json"))) == sorted([made["paused"], made["created"]])
    for key in ("fin1", "fin2", "failed", "cancelled"):
        with pytest.raises(TaskNotFound):
            client.get(made[key])
        assert rows_of(store, made[key]) == (0, 0)
    assert orphans(store) == (0, 0)
    assert {k: rows_of(store, made[k]) for k in kept} == kept
    assert ok(bg("purge", "--all", "--yes")).lines() == ["nothing to purge"]


def test_purge_filters_older_than_and_dry_run(client: Client, bg: Bg, calls_log: str) -> None:
    made = _ended_mix(client, calls_log)
    store = client.store
    total = client.count_tasks()

    dry = ok(bg("purge", "--all", "--queue", "a", "--dry-run"))
    expected = sorted([made["fin1"], made["fin2"], made["cancelled"]])
    assert dry.lines() == [f"would delete 3 ended task(s): {', '.join(map(str, expected))}"]
    assert (
        ok(bg("purge", "--all", "--dry-run")).lines()[0].startswith("would delete 4 ended task(s)")
    )
    assert client.count_tasks() == total  # a dry run deletes nothing

    assert ok(bg("purge", "--status", "active", "--yes")).lines() == ["nothing to purge"]
    assert ok(bg("purge", "--status", "paused", "--yes")).lines() == ["nothing to purge"]
    assert client.count_tasks() == total

    set_task(store, made["fin1"], ended_at=ago(hours=2))
    assert ok(bg("purge", "--older-than", "1h", "--dry-run")).lines() == [
        f"would delete 1 ended task(s): {made['fin1']}"
    ]
    assert ok(bg("purge", "--older-than", "1h", "--yes")).lines() == ["deleted 1 ended task(s)"]
    with pytest.raises(TaskNotFound):
        client.get(made["fin1"])

    assert ok(bg("purge", "--status", "failed", "--queue", "a", "--yes")).lines() == [
        "nothing to purge"
    ]
    assert ok(bg("purge", "--all", "--name", "FIN-*", "--yes")).lines() == [
        "deleted 1 ended task(s)"
    ]
    assert ok(bg("purge", "--status", "failed", "--yes")).lines() == ["deleted 1 ended task(s)"]
    left = {made[k] for k in ("paused", "created", "cancelled")}
    assert set(ids(bg("list", "--json"))) == left
    assert orphans(store) == (0, 0)


def test_purge_in_several_batches(
    client: Client, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ended = [client.enqueue(f"t{i}", [NOOP]) for i in range(30)]
    assert client.run_once().finished == 30
    waiting = client.enqueue("waiting", [NOOP])

    writes = 0
    real_write = store._write

    def counting() -> AbstractContextManager[Connection]:
        nonlocal writes
        writes += 1
        return real_write()

    monkeypatch.setattr(store, "_write", counting)
    assert store.admin.purge(batch=7) == 30
    assert writes == math.ceil(30 / 7)  # one transaction per batch
    monkeypatch.undo()
    assert [task.id for task in store.list_tasks()] == [waiting]
    assert orphans(store) == (0, 0)
    assert scalar(store, "SELECT count(*) FROM bgtaskex_actions") == 1
    assert all(rows_of(store, tid) == (0, 0) for tid in ended)


@pytest.fixture
def keep(settings: Settings) -> Iterator[Callable[..., Client]]:
    """`keep(keep_finished=0)`: a client whose runs apply that retention."""
    opened: list[Client] = []

    def make(**retention: float | None) -> Client:
        client = connect(settings=settings._replace(**retention))
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


def test_retention_deletes_finished_tasks_at_the_end_of_the_run(
    keep: Callable[..., Client],
) -> None:
    client = keep(keep_finished=0)
    tid = client.enqueue("t", [NOOP, NOOP])
    summary = client.run_once()
    assert (summary.finished, summary.purged) == (1, 1)
    with pytest.raises(TaskNotFound):
        client.get(tid)
    assert rows_of(client.store, tid) == (0, 0)
    assert orphans(client.store) == (0, 0)


def test_retention_keeps_tasks_younger_than_it(keep: Callable[..., Client]) -> None:
    client = keep(keep_finished=3600)
    tid = client.enqueue("t", [NOOP])
    summary = client.run_once()
    assert (summary.finished, summary.purged) == (1, 0)
    assert client.get(tid).status == "finished"
    set_task(client.store, tid, ended_at=ago(hours=2))
    summary = client.run_once()  # a run with nothing to do still applies retention
    assert (summary.finished, summary.purged) == (0, 1)
    with pytest.raises(TaskNotFound):
        client.get(tid)


@pytest.mark.parametrize("purged", ["failed", "finished"])
def test_retention_of_failed_and_finished_is_independent(
    keep: Callable[..., Client], calls_log: str, purged: str
) -> None:
    if purged == "failed":
        client = keep(keep_failed=0, keep_finished=None)
    else:
        client = keep(keep_finished=0, keep_failed=3600)
    finished = client.enqueue("fine", [NOOP])
    failed = client.enqueue("bad", [failing(calls_log)])
    cancelled = client.enqueue("stop", [NOOP])
    client.cancel(cancelled)
    first = client.run_once()
    second = client.run_once()
    assert second.failed == 1
    gone = {failed} if purged == "failed" else {finished, cancelled}  # cancelled: keep_finished
    assert first.purged + second.purged == len(gone)
    for tid in (finished, failed, cancelled):
        if tid in gone:
            with pytest.raises(TaskNotFound):
                client.get(tid)
        else:
            assert client.get(tid).status in ("finished", "failed", "cancelled")


def test_idle_probe_does_not_skip_retention(tmp_path: Path, isolated: None) -> None:
    """SQLite only: `run-once` skips the full run when a probe finds nothing to do; an
    ended task past its retention is something to do."""
    url = f"sqlite:///{tmp_path / 'probe.db'}"
    lock = str(tmp_path / "probe.lock")
    settings = Settings(database_url=url, lock_file=lock, imports=("tests.scripted",))
    with connect(settings=settings) as client:
        tid = client.enqueue("t", [NOOP])
        client.run_once()
        assert sqlite_idle(url, {"finished": 3600.0})  # ended just now: kept
        set_task(client.store, tid, ended_at=ago(hours=2))
    assert not sqlite_idle(url, {"finished": 3600.0})
    assert not sqlite_idle(url, {"finished": 0.0})
    assert sqlite_idle(url, {"finished": 3 * 3600.0})
    assert sqlite_idle(url, {"failed": 0.0, "cancelled": 0.0})
    assert sqlite_idle(url, {})

    def run_once(*env: tuple[str, str]) -> dict[str, Any]:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in env:
                patch.setenv(key, value)
            result = run_cli("--database-url", url, "run-once", "--lock-file", lock, "--json")
        code, out, err = result.code, result.out, result.err
        assert code == 0, (out, err)
        return json.loads(out)  # type: ignore[no-any-return]

    assert run_once()["idle"] is True  # the default keeps finished tasks 30 days
    report = run_once(("BGTASKEX_KEEP_FINISHED", "1h"))
    assert (report["idle"], report["purged"]) == (False, 1)
    assert run_once(("BGTASKEX_KEEP_FINISHED", "1h"))["idle"] is True
    with connect(settings=settings) as client, pytest.raises(TaskNotFound):
        client.get(tid)


# -- 7. stats and check ------------------------------------------------------------------


def test_stats_counts_windows_and_mean(client: Client, bg: Bg, calls_log: str) -> None:
    a1 = client.enqueue("a1", [looper(total=3, step=0.02)], queue="a")
    a2 = client.enqueue("a2", [looper(total=2, step=0.02)], queue="a")
    b1 = client.enqueue("b1", [failing(calls_log)], type="interactive", queue="b")
    client.run_once()
    client.run_once()
    b2 = client.enqueue("b2", [NOOP], queue="b")
    b3 = client.enqueue("b3", [NOOP], queue="b")
    set_task(client.store, b2, created_at=ago(minutes=5))
    set_actions(client.store, a2, ended_at=ago(hours=2))  # done, but not in the last hour
    assert status_of(client, b1)[0] == "failed"
    elapsed = [client.get(tid).actions[0].elapsed for tid in (a1, a2)]
    assert min(elapsed) > 0.03

    numbers = client.store.admin.stats()
    assert sorted(numbers.counts) == [
        ("a", "cron", "finished", 2),
        ("b", "cron", "created", 2),
        ("b", "interactive", "failed", 1),
    ]
    assert numbers.oldest_waiting == client.get(b2).created_at
    assert sorted(numbers.actions_ended) == [
        ("1d", "done", 2),
        ("1d", "failed", 1),
        ("1h", "done", 1),
        ("1h", "failed", 1),
    ]
    assert numbers.mean_action_seconds == pytest.approx(sum(elapsed) / 2)

    data = bg("stats", "--json").json()
    assert data["tasks"] == [
        {"queue": q, "type": ty, "status": st, "count": n} for q, ty, st, n in numbers.counts
    ]
    assert data["waiting"] == 2
    assert data["actions_ended"] == {
        "1h": {"done": 1, "failed": 1},
        "1d": {"done": 2, "failed": 1},
    }
    assert data["mean_action_seconds"] == pytest.approx(sum(elapsed) / 2)
    assert 295 <= data["oldest_waiting_seconds"] < 400
    assert data["oldest_waiting_at"].endswith("Z")
    assert set(data) == set(stats_dict(numbers))

    human = ok(bg("stats"))
    rows = {tuple(line.split()) for line in human.lines()}
    assert ("a", "cron", "finished", "2") in rows and ("b", "cron", "created", "2") in rows
    assert any(line.startswith("waiting tasks: 2, the oldest for 5m") for line in human.lines())
    assert "1 done, 1 failed; last day: 2 done, 1 failed" in human.out

    prom = ok(bg("stats", "--prometheus")).out
    families = {f.name: f for f in text_string_to_metric_families(prom)}
    tasks = {
        (s.labels["queue"], s.labels["type"], s.labels["status"]): s.value
        for s in families["bgtaskex_tasks"].samples
    }
    assert tasks == {(q, ty, st): float(n) for q, ty, st, n in numbers.counts}
    ended = {
        (s.labels["window"], s.labels["status"]): s.value
        for s in families["bgtaskex_actions_ended"].samples
    }
    assert ended == {("1h", "done"): 1, ("1h", "failed"): 1, ("1d", "done"): 2, ("1d", "failed"): 1}
    (mean,) = families["bgtaskex_action_execute_seconds_mean"].samples
    assert mean.value == pytest.approx(sum(elapsed) / 2)
    (oldest,) = families["bgtaskex_oldest_waiting_task_age_seconds"].samples
    assert 295 <= oldest.value < 400
    assert b3  # the second waiting task counts, the oldest is b2


def test_stats_of_an_empty_database(bg: Bg) -> None:
    data = bg("stats", "--json").json()
    assert data["tasks"] == [] and data["waiting"] == 0
    assert data["oldest_waiting_at"] is None and data["mean_action_seconds"] is None
    assert data["actions_ended"] == {"1h": {"done": 0, "failed": 0}, "1d": {"done": 0, "failed": 0}}
    families = list(text_string_to_metric_families(ok(bg("stats", "--prometheus")).out))
    assert {f.name for f in families} >= {"bgtaskex_tasks", "bgtaskex_actions_ended"}
    assert ok(bg("stats")).lines()[0] == "no tasks"


def test_check_ok_then_warning_for_a_stuck_task(client: Client, bg: Bg) -> None:
    healthy = ok(bg("check"))
    assert len(healthy.lines()) == 1 and healthy.out.startswith("BGTASKEX OK"), healthy
    tid = client.enqueue("t", [NOOP])
    other = client.enqueue("u", [NOOP])
    assert ok(bg("check")).out.startswith("BGTASKEX OK")

    set_task(client.store, tid, updated_at=ago(minutes=10))
    stuck = bg("check")
    assert stuck.code == 1, stuck
    assert len(stuck.lines()) == 1 and stuck.out.startswith("BGTASKEX WARNING"), stuck
    assert f"(ids {tid})" in stuck.out and str(other) not in stuck.out.split("ids")[-1], stuck
    assert ok(bg("check", "--stuck-after", "1h")).out.startswith("BGTASKEX OK")
    assert bg("check", "--stuck-after", "1s").code == 1
    # an ended task is never stuck
    client.cancel(tid)
    assert ok(bg("check")).out.startswith("BGTASKEX OK")


def test_check_database_unreachable(isolated: None) -> None:
    result = run_cli("--database-url", "postgresql+psycopg://nobody@127.0.0.1:1/none", "check")
    code, out, err = result.code, result.out, result.err
    assert code == 1, (out, err)
    assert len(out.splitlines()) == 1 and out.startswith("BGTASKEX WARNING"), (out, err)
    assert "unavailable" in out and "Traceback" not in err, (out, err)


# -- 8. run-once --json ------------------------------------------------------------------


def test_run_once_json_report(client: Client, bg: Bg, calls_log: str) -> None:
    client.enqueue("fine", [NOOP, NOOP])
    client.enqueue("half", [looper(total=3, per_call=1, step=0.0)])
    client.enqueue("dies", [scripted(calls_log, execute=["raise"])])
    client.cancel(client.enqueue("gone", [NOOP]))
    result = bg("run-once", "--json", "--max-execution-time", "20")
    assert result.code == 0, result  # stderr has the warning logged for the hook that raised
    assert len(result.lines()) == 1, result
    report = result.json()
    assert set(report) == SUMMARY_FIELDS
    counts = {k: report[k] for k in ("finished", "paused", "failed", "errored", "cancelled")}
    assert counts == {"finished": 1, "paused": 1, "failed": 0, "errored": 1, "cancelled": 0}
    assert report["actions"] == 4 and report["purged"] == 0 and report["idle"] is False
    assert report["budget"] == 20
    assert isinstance(report["run_id"], str) and report["run_id"]
    assert report["started_at"].endswith("Z")
    assert 0 <= report["lock_wait"] < 10 and 0 <= report["elapsed"] < 20


# -- 10. help and bad usage --------------------------------------------------------------

COMMANDS = [
    "enqueue",
    "list",
    "show",
    "retry",
    "cancel",
    "purge",
    "stats",
    "check",
    "run-once",
    "db upgrade",
    "demo",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_examples(command: str) -> None:
    result = CliRunner().invoke(cli, [*command.split(), "--help"], prog_name="bgtaskex")
    assert result.exit_code == 0, result.output
    assert f"Usage: bgtaskex {command}" in result.output
    assert "Examples:" in result.output, result.output
    examples = result.output.split("Examples:", 1)[1]
    assert f"bgtaskex {command.split()[0]}" in examples


BAD_USAGE = [
    ["list", "--status", "bogus"],
    ["list", "--status", "ended"],
    ["list", "--limit", "0"],
    ["list", "--limit", "many"],
    ["list", "--since", "yesterday"],
    ["list", "--until", "2026-13-45"],
    ["list", "--type", "weekly"],
    ["list", "--frobnicate"],
    ["list", "extra-argument"],
    ["show"],
    ["show", "abc"],
    ["show", "1", "2"],
    ["retry"],
    ["retry", "1", "--all-failed"],
    ["retry", "--all-failed", "--status", "failed"],
    ["retry", "x"],
    ["cancel"],
    ["cancel", "x"],
    ["purge", "--older-than", "soon"],
    ["purge", "--status", "bogus", "--yes"],
    ["purge", "--since", "whenever", "--yes"],
    ["stats", "--frobnicate"],
    ["stats", "extra"],
    ["check", "--frobnicate"],
    ["check", "--stuck-after", "soon"],
    ["run-once", "--wait", "-1"],
    ["run-once", "--max-execution-time", "0"],
    ["run-once", "--max-execution-time", "soon"],
    ["run-once", "--frobnicate"],
]


@pytest.mark.parametrize("args", BAD_USAGE, ids=lambda args: " ".join(args))
def test_bad_usage_is_one_error_line_exit_2(
    args: list[str], tmp_path: Path, isolated: None
) -> None:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    result = run_cli("--database-url", url, *args)
    code, out, err = result.code, result.out, result.err
    assert code == 2, (out, err)
    assert out == "", (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgtaskex: error: "), (out, err)


def test_filters_select_the_same_tasks_everywhere(client: Client, calls_log: str) -> None:
    """list, purge --dry-run and retry --all-failed share one filter implementation."""
    failed = client.enqueue("Nightly_report", [failing(calls_log)], queue="reports")
    client.enqueue("nightly-other", [failing(calls_log, "G")], queue="reports")
    client.run_once()
    client.run_once()
    where = TaskFilter(name_glob="nightly_*", queues=frozenset({"reports"}))
    assert [task.id for task in client.list_tasks(where)] == [failed]
    assert client.count_tasks(where) == 1
    assert client.store.admin.purge_preview(where) == (1, [failed])


def test_check_warns_when_the_schema_is_not_this_release(store: Store, bg: Bg) -> None:
    sql_write(
        store,
        lambda conn: conn.execute(text("UPDATE bgtaskex_alembic_version SET version_num = 'ffff'")),
    )
    result = bg("check")
    assert result.code == 1, result
    assert len(result.lines()) == 1 and result.out.startswith("BGTASKEX WARNING"), result
    assert "internal error" not in result.err, result
