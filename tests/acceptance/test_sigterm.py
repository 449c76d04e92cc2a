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
