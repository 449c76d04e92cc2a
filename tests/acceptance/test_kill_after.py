"""The hard limit (docs/semantics.md#the-hard-limit): a hook that ignores its deadline is
killed `kill_after` past it, like PHP's max_execution_time ends the original: one log
line, exit 7 under `run-once`; under the daemon the run's child process dies and the
daemon goes on. The next run recovers the task as after a crash, and
change_params_on_error is told why: "overrun: ...".

On SQLite (the run's process is the point, not the database).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import Bgx, describe, entries, hooks, scripted, summary
from tests.acceptance.test_daemon import Daemon, process, write_config

pytestmark = pytest.mark.timeout(90)

KILLED_EXIT = 7
OVERRUN = re.compile(
    r"CRITICAL bgtaskex.runner: run [0-9a-f]+: task (\d+) \(t\): execute of action 1 "
    r"\(tests.scripted:Scripted\) overran the deadline by (\d+\.\d)s \(kill_after=1s\)"
)


def test_run_once_kills_a_hook_overrunning_the_deadline_by_kill_after(
    bgx: Bgx, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    log = tmp_path / "calls.jsonl"
    options = ("--database-url", url, "--import", "tests.scripted")
    plan = {"execute": ["sleep:60", "true"]}
    task_id = int(bgx.ok(*options, "enqueue", "t", scripted(log, plan), "-q").stdout)
    run = (*options, "run-once", "--max-execution-time", "1", "--kill-after", "1")

    began = time.monotonic()
    killed = bgx(*run)
    took = time.monotonic() - began
    assert killed.returncode == KILLED_EXIT, describe(killed)
    assert took < 15, took  # 1 s budget + 1 s kill_after + start-up, not the 60 s sleep
    lines = [line for line in killed.stderr.splitlines() if "overran" in line]
    assert len(lines) == 1, describe(killed)
    found = OVERRUN.search(lines[0])
    assert found is not None, describe(killed)
    assert int(found[1]) == task_id and 1.0 <= float(found[2]) < 3.0, lines
    task = bgx.show(url, task_id)
    assert task["status"] == "running"
    assert task["actions"][0]["last_failure"].startswith("overrun: execute ran ")
    # #15 attack: its run record says why it died (it said only "died", no error).
    (record,) = bgx.json("--database-url", url, "runs", "--json")
    assert record["outcome"] == "died" and record["ended_at"], record
    assert record["error"].startswith("killed (exit 7): overrun: execute ran "), record

    recovered = bgx(*run)
    assert recovered.returncode == 0, describe(recovered)
    assert summary(recovered)["finished"] == 1
    assert hooks(log) == ["init", "execute", "change", "execute"]
    action = bgx.show(url, task_id)["actions"][0]
    assert (action["status"], action["attempts"]) == ("done", 1)
    assert action["params"]["last_failure"].startswith("overrun: execute ran ")


def test_kill_after_never_lets_a_hook_overrun(bgx: Bgx, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    log = tmp_path / "calls.jsonl"
    options = ("--database-url", url, "--import", "tests.scripted")
    bgx.ok(*options, "enqueue", "t", scripted(log, {"execute": ["sleep:2.5"]}), "-q")
    done = bgx(*options, "run-once", "--max-execution-time", "1", "--kill-after", "never")
    assert done.returncode == 0, describe(done)
    assert ": 1 finished," in done.stdout and "overran the deadline by" in done.stdout


def test_the_daemon_survives_a_run_killed_by_kill_after(bgx: Bgx, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    log = tmp_path / "calls.jsonl"
    config = write_config(
        tmp_path / "bgtaskex.toml",
        url,
        process("often", every="2s", max_execution_time='"1s"'),
        kill_after='"1s"',
    )
    options = ("--database-url", url, "--import", "tests.scripted")
    plan = {"execute": ["sleep:60", "true"]}
    task_id = int(bgx.ok(*options, "enqueue", "t", scripted(log, plan), "-q").stdout)
    daemon = Daemon(bgx, tmp_path, config).started()
    daemon.wait_for(
        lambda: "the run's process exited with code 7" in daemon.log(),
        "the daemon to log its run's child killed",
    )
    assert len(OVERRUN.findall(daemon.log())) == 1, daemon.describe()
    daemon.wait_for(
        lambda: bgx.show(url, task_id)["status"] == "finished",
        "the next trigger to recover the task",
    )
    assert hooks(log) == ["init", "execute", "change", "execute"]
    assert daemon.pid not in {e["pid"] for e in entries(log)}, "a hook ran in the daemon"
    daemon.stop()


def test_run_once_kills_a_planner_overrunning_the_deadline_by_kill_after(
    bgx: Bgx, tmp_path: Path
) -> None:
    """A process's planner (`callable`) that never returns is bounded as a hook is: under
    cron it would otherwise hold the run lock for ever, and every later run would find
    it held. One CRITICAL line naming the process and its callable, exit 7; the next run
    gets the lock and runs the task queued before."""
    url = f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    config = write_config(
        tmp_path / "bgtaskex.toml",
        url,
        process("stuck", every="60s", max_execution_time='"1s"', callable='"tests.planner:hang"'),
    )
    options = ("--database-url", url, "--import", "tests.scripted")
    task_id = int(bgx.ok(*options, "enqueue", "t", "tests.scripted:Noop", "-q").stdout)

    began = time.monotonic()
    killed = bgx("--config", config, "run-once", "--process", "stuck", "--kill-after", "1")
    took = time.monotonic() - began
    assert killed.returncode == KILLED_EXIT, describe(killed)
    assert took < 15, took  # 1 s budget + 1 s kill_after + start-up, not for ever
    lines = [line for line in killed.stderr.splitlines() if "overran" in line]
    assert len(lines) == 1, describe(killed)
    found = re.search(
        r"CRITICAL bgtaskex.runner: run [0-9a-f]+: process stuck: its callable "
        r"\(tests.planner:hang\) overran the deadline by (\d+\.\d)s \(kill_after=1s\): "
        r"killing the run \(exit 7\)",
        lines[0],
    )
    assert found is not None and 1.0 <= float(found[1]) < 3.0, describe(killed)
    assert bgx.show(url, task_id)["status"] == "created"  # the planner comes first

    after = bgx(*options, "run-once")  # the lock is free again
    assert after.returncode == 0, describe(after)
    assert summary(after)["finished"] == 1


def test_a_planner_returning_past_the_deadline_is_reported(bgx: Bgx, tmp_path: Path) -> None:
    """Within kill_after a late planner is let finish, and its overrun is reported as a
    hook's is: a WARNING line and the run's max_overrun."""
    url = f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    (tmp_path / "slow_planner.py").write_text(SLOW, encoding="utf-8")
    config = write_config(
        tmp_path / "bgtaskex.toml",
        url,
        process("slow", every="60s", max_execution_time='"1s"', callable='"slow_planner:plan"'),
    )
    path = f"{tmp_path}{os.pathsep}{bgx.env.get('PYTHONPATH', '')}"
    done = bgx(
        "--config", config, "run-once", "--process", "slow", "--json", env={"PYTHONPATH": path}
    )
    assert done.returncode == 0, describe(done)
    assert 1.0 <= json.loads(done.stdout)["max_overrun"] < 5.0, describe(done)
    late = "process slow: its callable (slow_planner:plan) overran the deadline by"
    assert late in done.stderr and "WARNING" in done.stderr, describe(done)


SLOW = """
import time


def plan(client):
    time.sleep(2.5)
"""

FROZEN = """
import os, signal


def freeze(client):
    os.kill(os.getpid(), signal.SIGSTOP)  # the whole process, its watchdog too
"""


def test_the_daemon_kills_a_run_child_its_own_watchdog_cannot_end(bgx: Bgx, tmp_path: Path) -> None:
    """A run's child stopped whole (here its planner sends itself SIGSTOP; a call into C
    that holds the interpreter is alike): its own watchdog cannot end it. The daemon kills
    the child at the deadline + kill_after + its grace (5 s), logs it, and goes on: its
    next trigger runs again."""
    url = f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    (tmp_path / "frozen_planner.py").write_text(FROZEN, encoding="utf-8")
    config = write_config(
        tmp_path / "bgtaskex.toml",
        url,
        process("stuck", every="1s", max_execution_time='"1s"', callable='"frozen_planner:freeze"'),
        kill_after='"1s"',
    )
    path = f"{tmp_path}{os.pathsep}{bgx.env.get('PYTHONPATH', '')}"
    daemon = Daemon(bgx, tmp_path, config, env={"PYTHONPATH": path}).started()
    began = time.monotonic()
    killed = "the run's process was killed after 7s (the deadline + kill_after + 5s)"
    daemon.wait_for(lambda: killed in daemon.log(), "the daemon to kill its run's child")
    took = time.monotonic() - began
    assert 6.5 <= took < 15, took
    time.sleep(0.5)  # a bounded look: the daemon goes on (its next run hangs again)
    assert daemon.proc.poll() is None, daemon.describe()
    # (the bgx fixture kills the daemon; its run's child dies with it: PR_SET_PDEATHSIG)


def test_the_daemon_says_a_run_killed_in_its_planner_held_no_task(bgx: Bgx, tmp_path: Path) -> None:
    """Attack 2 #05 of #14: a planner that never returns is killed at every run, before
    the run takes any task, so the process's queued tasks never run. The daemon's line
    says so (it said "the next run recovers its task", though the run held none)."""
    url = f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    config = write_config(
        tmp_path / "bgtaskex.toml",
        url,
        process(
            "stuck",
            every="2s",
            max_execution_time='"1s"',
            callable='"tests.planner:hang"',
        ),
        kill_after='"1s"',
    )
    options = ("--database-url", url, "--import", "tests.scripted")
    task_id = int(bgx.ok(*options, "enqueue", "t", "tests.scripted:Noop", "-q").stdout)
    daemon = Daemon(bgx, tmp_path, config).started()
    said = (
        "process stuck: the run's process exited with code 7 in its planner, callable "
        "tests.planner:hang, before it took any task; the daemon goes on (the planner runs "
        "first at each run: one that never returns keeps the process's tasks from running)"
    )
    daemon.wait_for(lambda: said in daemon.log(), "the daemon to log its planner killed")
    assert "recovers its task" not in daemon.log(), daemon.describe()
    assert bgx.show(url, task_id)["status"] == "created"  # the planner comes first
    daemon.stop()
