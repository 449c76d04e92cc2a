"""The operators' commands against real `bgtaskex` processes: cancelling a task that a
running `run-once` is executing right now, `run-once --json` and the lock holder,
`check` next to a live and a killed run, `purge` without a terminal, help and bad usage.

Terminals (colours, live progress, confirmation) are in test_tty.py; the filters and
numbers in tests/integration/test_ops.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.exceptions import TaskNotFound
from bgtaskex.run.file_lock import RunLock
from bgtaskex.store import Store
from tests.acceptance.conftest import (
    Bgx,
    describe,
    entries,
    finish,
    hook_started,
    lock_is_free,
    run_many,
    wait_until,
)
from tests.integration.test_ops import SUMMARY_FIELDS  # the documented contract

LOOPER = "tests.ops_actions:Looper"
WAIT_FILE = "tests.ops_actions:WaitFile"
IMPORT = ("--import", "tests.ops_actions")


pytestmark = pytest.mark.timeout(120)


def _enqueue(url: str, task: str, ref: str, **params: Any) -> int:
    """Set-up through the library: the commands under test run as subprocesses."""
    with connect(settings=Settings(database_url=url)) as client:
        return client.enqueue(task, [(ref, params)])


def _run(url: str, lock: str) -> None:
    with connect(settings=Settings(database_url=url, lock_file=lock)) as client:
        client.run_once(max_execution_time=30)


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, describe(result)
    return lines[0]


def _read(url: str, task_id: int) -> Any:
    store = Store(url)
    try:
        return store.get_task(task_id)
    finally:
        store.close()


def _events(url: str, task_id: int) -> Any:
    store = Store(url)
    try:
        return store.events(task_id)
    finally:
        store.close()


# -- 5. cancel a task that a run is executing right now -------------------------------------


def test_cancel_a_task_a_run_is_executing(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    """The default lock file (none given anywhere): what an operator and cron both use."""
    log = tmp_path / "calls.jsonl"
    url = ("--database-url", db_url)
    tid = _enqueue(db_url, "endless", LOOPER, name="L", log=str(log), total=None)
    holder = bgx.start(*url, *IMPORT, "run-once", "--max-execution-time", "60", "--json")
    wait_until(hook_started(log, "execute", holder.pid), "execute to start", proc=holder)
    wait_until(
        lambda: _read(db_url, tid).actions[0].params.get("i", 0) >= 2,
        "two checkpoints",
        proc=holder,
    )

    asked = bgx(*url, "cancel", tid)
    assert asked.returncode == 0, describe(asked)
    line = _one_line(asked)
    assert f"task {tid}" in line and "next checkpoint" in line, line

    code, out, err = finish(holder)
    assert code == 0 and "Traceback" not in err, (out, err)
    report = json.loads(out)
    assert report["cancelled"] == 1, report
    assert (report["finished"], report["paused"], report["failed"], report["errored"]) == (
        0,
        0,
        0,
        0,
    )
    assert report["elapsed"] < 30, report  # ended at a checkpoint, not at the deadline

    task = _read(db_url, tid)
    assert task.status == "cancelled" and [a.status for a in task.actions] == ["cancelled"]
    assert task.cancel_requested_at is not None and task.ended_at is not None
    assert task.actions[0].params["i"] >= 2  # the params of the last checkpoint are kept
    events = _events(db_url, tid)
    requested = [e for e in events if "cancel requested" in e.message]
    assert len(requested) == 1 and requested[0].run_id is None
    assert events[-1].new_status == "cancelled" and events[-1].run_id == report["run_id"]
    # the action was called once, by the holder, and never again
    assert [(e["hook"], e["pid"]) for e in entries(log)] == [
        ("init", holder.pid),
        ("execute", holder.pid),
    ]

    again = bgx.json(*url, *IMPORT, "run-once", "--json")
    assert again.get("cancelled", 0) == 0 and again.get("actions", 0) == 0, again
    assert len(entries(log)) == 2
    assert _read(db_url, tid).status == "cancelled"  # the runs never wrote over it
    assert len(_events(db_url, tid)) == len(events)


# -- 8. run-once --json and the lock holder -------------------------------------------------


def test_run_once_json_and_lock_holder(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    lock_path = tmp_path / "run.lock"
    run = ("--database-url", db_url, *IMPORT, "run-once", "--lock-file", str(lock_path))
    _enqueue(db_url, "quick", LOOPER, total=2, step=0.0)

    lock = RunLock(lock_path)
    lock.acquire()  # this test process is "another run"
    try:
        busy = bgx(*run, "--json")
        assert busy.returncode == 0, describe(busy)
        assert busy.stderr == "", describe(busy)
        report = json.loads(_one_line(busy))
        assert report["run_id"] is None and report["locked"] is True, report
        holder = report["holder"]
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        since = datetime.fromisoformat(holder["since"].replace("Z", "+00:00"))
        assert abs(datetime.now(UTC) - since) < timedelta(minutes=1)

        human = bgx(*run)
        assert human.returncode == 0 and human.stderr == "", describe(human)
        line = _one_line(human)
        assert f"pid {os.getpid()}" in line, line
        assert socket.gethostname() in line and holder["since"] in line, line
    finally:
        lock.release()

    ran = bgx(*run, "--json")
    assert ran.returncode == 0, describe(ran)
    report = json.loads(_one_line(ran))
    assert set(report) == SUMMARY_FIELDS, report
    assert (report["finished"], report["actions"], report["idle"]) == (1, 1, False)
    assert isinstance(report["run_id"], str) and report["started_at"].endswith("Z")
    assert report["budget"] == 30 and report["lock_wait"] >= 0 and report["elapsed"] >= 0

    # Nothing due: `idle` is true on every backend. SQLite's probe answers before any
    # run (run_id: the one its record has); elsewhere a run finds nothing, and says so
    # (#15: it said false).
    idle = json.loads(_one_line(bgx(*run, "--json")))
    assert idle["idle"] is True and idle["next_due_at"] is None, idle
    if db_url.startswith("sqlite"):
        assert idle == {
            "run_id": idle["run_id"],
            "idle": True,
            "elapsed": idle["elapsed"],
            "next_due_at": None,
        }
    else:
        assert set(idle) == SUMMARY_FIELDS and isinstance(idle["run_id"], str), idle
        assert (idle["finished"], idle["actions"], idle["purged"]) == (0, 0, 0), idle


# -- 7. check next to a live run and a killed one --------------------------------------------


def test_check_with_a_live_run_then_a_stale_lock(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    lock = tmp_path / "run.lock"
    env = {"BGTASKEX_LOCK_FILE": str(lock)}
    url = ("--database-url", db_url)
    _enqueue(db_url, "waits", WAIT_FILE, log=str(log), file=str(tmp_path / "never"))
    holder = bgx.start(*url, *IMPORT, "run-once", "--max-execution-time", "60", env=env)
    wait_until(hook_started(log, "execute", holder.pid), "execute to start", proc=holder)

    working = bgx(*url, *IMPORT, "check", env=env)
    assert working.returncode == 0, describe(working)
    line = _one_line(working)
    assert line.startswith("BGTASKEX OK"), line
    assert "a run is working" in line and f"pid {holder.pid}" in line, line

    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=30)
    wait_until(lambda: lock_is_free(lock), "the kernel to release the lock")
    assert json.loads(lock.read_text())["pid"] == holder.pid  # the file still names it

    # The stale lock file is harmless; the run that died is not (the record of runs):
    # check warns about it, and still notes the lock file.
    stale = bgx(*url, *IMPORT, "check", "--json", env=env)
    assert stale.returncode == 1, describe(stale)
    report = json.loads(stale.stdout)
    (note,) = [n for n in report["notes"] if "stale lock file" in n]
    assert "harmless" in note and f"pid {holder.pid}" in note, note
    assert "1 task(s) waiting" in report["notes"], report  # left `running` by the killed run
    assert report["last_run"]["pid"] == holder.pid and report["last_run"]["outcome"] == "died"
    assert [p for p in report["problems"] if "died before its end" in p], report


def test_check_database_unreachable(bgx: Bgx) -> None:
    result = bgx("--database-url", "postgresql+psycopg://nobody:secret@127.0.0.1:1/x", "check")
    assert result.returncode == 1, describe(result)
    line = _one_line(result)
    assert line.startswith("BGTASKEX WARNING") and "unavailable" in line, line
    assert "secret" not in result.stdout + result.stderr


# -- 6. purge without a terminal --------------------------------------------------------------


def test_purge_needs_a_filter_and_off_a_terminal_yes(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    """README, *Operating it*: purge refuses without --older-than, --status or --all, and
    off a terminal (stdin here is no terminal) without --yes: exit 2, one line each."""
    first = _enqueue(db_url, "one", LOOPER, total=1, step=0.0)
    second = _enqueue(db_url, "two", LOOPER, total=1, step=0.0)
    _run(db_url, str(tmp_path / "run.lock"))
    waiting = _enqueue(db_url, "three", LOOPER, total=1, step=0.0)
    url = ("--database-url", db_url)

    for args, says in (
        (["purge", "--yes"], "purge needs --older-than DURATION, --status STATUS or --all"),
        (["purge", "--queue", "default", "--yes"], "purge needs --older-than"),
        (["purge", "--all"], "purge off a terminal needs --yes"),
        (["purge", "--older-than", "0"], "purge off a terminal needs --yes"),
    ):
        refused = bgx(*url, *args)
        assert refused.returncode == 2, describe(refused)
        assert refused.stdout == "" and "Traceback" not in refused.stderr, describe(refused)
        (line,) = refused.stderr.splitlines()
        assert line.startswith(f"bgtaskex: error: {says}"), describe(refused)
    with connect(settings=Settings(database_url=db_url)) as client:
        assert client.count_tasks() == 3  # nothing deleted

    dry = bgx(*url, "purge", "--all", "--dry-run")  # a dry run deletes nothing: no --yes
    assert dry.returncode == 0, describe(dry)
    purged = bgx(*url, "purge", "--all", "--yes")
    assert purged.returncode == 0, describe(purged)
    assert _one_line(purged) == "deleted 2 ended task(s)"
    with connect(settings=Settings(database_url=db_url)) as client:
        assert [task.id for task in client.list_tasks()] == [waiting]
        for tid in (first, second):
            with pytest.raises(TaskNotFound):
                client.get(tid)


# -- 10. help and bad usage of the real command -----------------------------------------------


def test_help_and_bad_usage(cli_env: dict[str, str], tmp_path: Path) -> None:
    url = ("--database-url", f"sqlite:///{tmp_path / 'usage.db'}")
    commands = ["list", "show", "retry", "cancel", "purge", "stats", "check", "run-once"]
    calls: dict[str, tuple[list[str], str | None]] = {
        f"help {c}": ([*url, c, "--help"], None) for c in commands
    }
    bad = {
        "bad status": [*url, "list", "--status", "nope"],
        "bad since": [*url, "list", "--since", "last tuesday"],
        "no ids": [*url, "cancel"],
        "ids and all": [*url, "retry", "3", "--all-failed"],
        "bad duration": [*url, "purge", "--older-than", "ages", "--yes"],
        "unknown option": [*url, "stats", "--xml"],
    }
    calls.update({key: (args, None) for key, args in bad.items()})
    results = run_many(cli_env, calls)
    for command in commands:
        shown = results[f"help {command}"]
        assert shown.returncode == 0, describe(shown)
        assert f"Usage: bgtaskex {command}" in shown.stdout, describe(shown)
        assert "Examples:" in shown.stdout, describe(shown)
    for key in bad:
        result = results[key]
        assert result.returncode == 2, describe(result)
        assert result.stdout == "" and "Traceback" not in result.stderr, describe(result)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bgtaskex: error: "), describe(result)
