"""The record of runs as an operator sees it, with real processes: a run-once killed
with SIGKILL in the middle of an action reads "died" in `bgtaskex runs` and makes
`check` warn; a daemon's runs (in its run children) are recorded under their process's
name; an idle `run-once` on SQLite (answered without SQLAlchemy) is recorded too."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from bgtaskex.client import connect
from bgtaskex.config import Settings
from tests.acceptance.conftest import Bgx, finish, hook_started, scripted, wait_until
from tests.acceptance.test_daemon import Daemon, enqueue, process, write_config

pytestmark = pytest.mark.timeout(120)

IMPORT = ("--import", "tests.scripted")


def test_a_run_killed_with_sigkill_reads_died_and_check_warns(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    db = ("--database-url", sqlite_url)
    bgx.ok(*db, *IMPORT, "enqueue", "slow", scripted(log, {"execute": ["sleep:30"]}), "-q")
    run = bgx.start(*db, *IMPORT, "run-once")
    wait_until(hook_started(log, "execute", run.pid), "execute to start", proc=run)
    (going,) = bgx.json(*db, "runs", "--json")
    assert (going["outcome"], going["pid"], going["ended_at"]) == ("running", run.pid, None)
    assert bgx(*db, *IMPORT, "check").returncode == 0  # a run going on is no problem

    os.kill(run.pid, signal.SIGKILL)
    finish(run)
    (died,) = bgx.json(*db, "runs", "--json")
    assert (died["id"], died["outcome"], died["ended_at"]) == (going["id"], "died", None)
    assert [r["id"] for r in bgx.json(*db, "runs", "--json", "--failed")] == [going["id"]]
    check = bgx(*db, *IMPORT, "check", "--json")
    assert check.returncode == 1, check
    report = json.loads(check.stdout)
    assert report["last_run"]["outcome"] == "died"
    assert [p for p in report["problems"] if "died before its end" in p], report


def test_a_daemon_run_is_recorded_with_its_process_name(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "bgtaskex.toml", sqlite_url, process("fast"))
    daemon = Daemon(bgx, tmp_path, config).started()
    task_id = enqueue(bgx, sqlite_url, "tests.scripted:Noop")
    with connect(settings=Settings(database_url=sqlite_url)) as client:

        def done() -> bool:
            return any(r.finished for r in client.runs(process="fast"))

        daemon.wait_for(done, "a run of process fast that finished the task")
        daemon.stop()
        runs = client.runs(process="fast", limit=100)
        assert client.get(task_id).status == "finished"
    assert runs and all(r.process == "fast" for r in runs)
    assert all(r.outcome == "ok" for r in runs), runs  # the stop let the last run end
    assert {r.pid for r in runs} != {daemon.pid}  # its run children ran them


def test_an_idle_run_once_on_sqlite_is_recorded(bgx: Bgx, sqlite_url: str, tmp_path: Path) -> None:
    db = ("--database-url", sqlite_url)
    bgx.ok(*db, "db", "upgrade")
    idle = bgx.json(*db, "run-once", "--json")
    assert idle["idle"] is True  # the fast path: no SQLAlchemy, no lock
    (run,) = bgx.json(*db, "runs", "--json")
    assert (run["outcome"], run["finished"], run["process"]) == ("ok", 0, None)
    assert run["ended_at"] >= run["started_at"]
    assert idle["run_id"] == run["run_id"]  # #15 attack: it said null
