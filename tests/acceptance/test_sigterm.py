"""SIGTERM (systemd stop): the run finishes the current hook, starts nothing new, and
leaves everything resumable; `should_stop()` tells a cooperative action."""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.acceptance.conftest import SCRIPTED, Bgx, describe, wait_until
from tests.scripted import calls

IMPORT = ("--import", "tests.scripted")


def test_sigterm_stops_after_the_current_hook(bgx: Bgx, db_url: str, tmp_path: Path) -> None:
    log = str(tmp_path / "calls.jsonl")
    first = {"name": "A", "log": log, "plan": {"execute": ["until-stop", "true"]}}
    second = {"name": "B", "log": log}
    for params in (first, second):
        bgx.ok(
            "--database-url", db_url, *IMPORT, "enqueue", "t", f"{SCRIPTED}={json.dumps(params)}"
        )

    run = bgx.start("--database-url", db_url, *IMPORT, "run-once", "--max-execution-time", "60")
    wait_until(lambda: ("A", "execute") in calls(log), "A.execute to start", proc=run)
    run.send_signal(signal.SIGTERM)
    out, err = run.communicate(timeout=30)
    assert run.returncode == 0, err
    assert "Traceback" not in err
    assert "0 finished, 1 paused" in out, out
    assert calls(log) == [("A", "init"), ("A", "execute")]  # B never started

    tasks = bgx.json("--database-url", db_url, "list", "--json")
    assert sorted(t["status"] for t in tasks) == ["created", "paused"]

    again = bgx("--database-url", db_url, *IMPORT, "run-once")
    assert again.returncode == 0, describe(again)
    assert calls(log)[2:] == [("A", "execute"), ("B", "init"), ("B", "execute")]


def test_a_second_sigterm_ends_run_once_at_once_with_143(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """README, *Exit codes*: a second SIGTERM exits at once with 128 + 15, not waiting for
    a hook that ignores `should_stop()`; the next run recovers the task as after a crash."""
    log = str(tmp_path / "calls.jsonl")
    params = {"name": "A", "log": log, "plan": {"execute": ["until-deadline", "true"]}}
    url = ("--database-url", sqlite_url)
    bgx.ok(*url, *IMPORT, "enqueue", "t", f"{SCRIPTED}={json.dumps(params)}")
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as sink:
        run = bgx.start(*url, *IMPORT, "run-once", "--max-execution-time", "60", stderr=sink)
        wait_until(lambda: ("A", "execute") in calls(log), "A.execute to start", proc=run)
        run.send_signal(signal.SIGTERM)
        wait_until(lambda: "stopping after" in errors.read_text(), "the first stop", proc=run)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=10) == 128 + signal.SIGTERM, errors.read_text()
    assert "Traceback" not in errors.read_text()
    again = bgx.ok(*url, *IMPORT, "run-once")
    assert "1 finished" in again.stdout, describe(again)
