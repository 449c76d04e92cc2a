"""The run lock, between real `bgtaskex run-once` processes: one run at a time; a second
run says who holds the lock and does nothing (exit 0), or waits with --wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.acceptance.conftest import (
    Bgx,
    describe,
    entries,
    finish,
    hook_started,
    hooks,
    lock_is_free,
    scripted,
    summary,
    wait_until,
)

IMPORT = ("--import", "tests.scripted")

pytestmark = pytest.mark.timeout(120)


def _enqueue(bgx: Bgx, url: str, log: Path, plan: dict[str, list[str]]) -> int:
    added = bgx.ok("--database-url", url, *IMPORT, "enqueue", "slow", scripted(log, plan), "-q")
    return int(added.stdout)


def _start_holder(bgx: Bgx, url: str, log: Path, *more: str) -> subprocess.Popen[str]:
    """A run-once whose action works until its deadline, once it is inside execute."""
    holder = bgx.start("--database-url", url, *IMPORT, "run-once", *more)
    wait_until(hook_started(log, "execute", holder.pid), "the holder's execute", proc=holder)
    return holder


def _busy_line(result: subprocess.CompletedProcess[str], holder: subprocess.Popen[str]) -> str:
    assert result.returncode == 0, describe(result)
    assert result.stderr == "", describe(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, describe(result)
    assert "another run" in lines[0] and f"pid {holder.pid}" in lines[0], describe(result)
    return lines[0]


def _interrupt(holder: subprocess.Popen[str]) -> None:
    """Ctrl-C: exit 130, one line, no traceback. (The holder's action stops when asked,
    so this takes no longer than its hook.)"""
    holder.send_signal(signal.SIGINT)
    code, out, err = finish(holder)
    assert code == 130, (code, out, err)
    assert "interrupted" in err and "Traceback" not in err, err


def test_second_run_does_nothing_while_one_holds_the_lock(
    bgx: Bgx, db_url: str, tmp_path: Path
) -> None:
    log = tmp_path / "calls.jsonl"
    task_id = _enqueue(bgx, db_url, log, {"execute": ["until-stop"]})
    holder = _start_holder(bgx, db_url, log, "--max-execution-time", "60")

    second = bgx("--database-url", db_url, *IMPORT, "run-once")
    _busy_line(second, holder)
    began = time.monotonic()
    patient = bgx("--database-url", db_url, *IMPORT, "run-once", "--wait", "0.5")
    assert time.monotonic() - began >= 0.5
    _busy_line(patient, holder)

    assert hooks(log) == ["init", "execute"], "a run without the lock must call no hook"
    assert {e["pid"] for e in entries(log)} == {holder.pid}
    assert bgx.show(db_url, task_id)["status"] == "running"  # untouched, still the holder's
    assert holder.poll() is None

    _interrupt(holder)


def test_wait_runs_after_the_holder_finishes(bgx: Bgx, sqlite_url: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    lock = tmp_path / "cli.db.lock"  # the default: next to the SQLite file
    _enqueue(bgx, sqlite_url, log, {"execute": ["until-deadline", "true"]})
    holder = _start_holder(bgx, sqlite_url, log, "--max-execution-time", "5")
    assert json.loads(lock.read_text())["pid"] == holder.pid

    waiter = bgx.start("--database-url", sqlite_url, *IMPORT, "run-once", "--wait", "30")
    if sys.platform.startswith("linux"):
        # The waiter has opened the lock file (so it is trying to take it) while the
        # holder still holds the lock: it is really waiting.
        wait_until(lambda: _has_open(waiter.pid, lock), "the waiter to open the lock", proc=waiter)
        assert holder.poll() is None, "the holder ended too early to show the wait"
        assert not lock_is_free(lock)
    assert hooks(log) == ["init", "execute"]

    code, out, err = finish(holder)
    assert code == 0, (out, err)
    held = summary(subprocess.CompletedProcess(holder.args, code, out, err))
    assert held["paused"] == 1
    code, out, err = finish(waiter)
    assert code == 0 and "Traceback" not in err, (out, err)
    waited = summary(subprocess.CompletedProcess(waiter.args, code, out, err))
    assert waited["finished"] == 1
    calls = [(e["hook"], e["pid"]) for e in entries(log)]
    assert calls == [("init", holder.pid), ("execute", holder.pid), ("execute", waiter.pid)]


def test_lock_file_option_and_env(bgx: Bgx, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    lock = tmp_path / "locks" / "sub" / "run.lock"  # its directory does not exist yet
    first = f"sqlite:///{tmp_path / 'first.db'}"
    other = f"sqlite:///{tmp_path / 'other.db'}"
    _enqueue(bgx, first, log, {"execute": ["until-stop"]})
    holder = _start_holder(bgx, first, log, "--lock-file", str(lock), "--max-execution-time", "60")
    assert json.loads(lock.read_text())["pid"] == holder.pid
    assert not lock_is_free(lock)
    assert not (tmp_path / "first.db.lock").exists(), "the default lock must not be used"

    noop = int(
        bgx.ok("--database-url", other, *IMPORT, "enqueue", "n", "tests.scripted:Noop", "-q").stdout
    )
    # Another database, the same lock file (through the environment): busy.
    busy = bgx("--database-url", other, *IMPORT, "run-once", env={"BGTASKEX_LOCK_FILE": str(lock)})
    assert str(lock) in _busy_line(busy, holder)
    assert bgx.show(other, noop)["status"] == "created"
    # The same database with its default lock file: not blocked by the holder.
    free = bgx.ok("--database-url", other, *IMPORT, "run-once")
    assert summary(free)["finished"] == 1

    _interrupt(holder)
    assert lock_is_free(lock)


def _has_open(pid: int, path: Path) -> bool:
    target = str(path.resolve())
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(os.path.join(fd_dir, name)) == target:
                return True
        except OSError:
            continue
    return False


def test_run_once_refuses_a_planted_symlink_and_leaves_its_target(
    bgx: Bgx, db_url: str, tmp_path: Path
) -> None:
    """Another user plants the lock file as a symlink to a file of root's: `run-once`
    says so in one line (exit 2), runs nothing, and the target keeps its content; `check`
    warns about it. (Before, the run emptied the target and wrote its pid there.)"""
    victim = tmp_path / "shadow"
    victim.write_text("root:$6$precious\n", encoding="utf-8")
    lock = tmp_path / "locks" / "run.lock"
    lock.parent.mkdir()
    lock.symlink_to(victim)
    noop = bgx.ok("--database-url", db_url, *IMPORT, "enqueue", "n", "tests.scripted:Noop", "-q")
    env = {"BGTASKEX_LOCK_FILE": str(lock)}
    for json_out in ((), ("--json",)):
        run = bgx("--database-url", db_url, *IMPORT, "run-once", *json_out, env=env)
        assert run.returncode == 2 and run.stdout == "", describe(run)
        assert run.stderr == (
            f"bgtaskex: error: lock file {lock} is a symbolic link: not bgtaskex's, left "
            "untouched (remove it, or choose another with --lock-file)\n"
        ), describe(run)
    assert victim.read_text(encoding="utf-8") == "root:$6$precious\n"
    assert lock.is_symlink() and sorted(os.listdir(lock.parent)) == ["run.lock"]
    assert bgx.show(db_url, int(noop.stdout))["status"] == "created"
    check = bgx("--database-url", db_url, "check", env=env)
    assert check.returncode == 1 and "is a symbolic link" in check.stdout, describe(check)
