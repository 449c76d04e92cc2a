"""An interactive task does not wait for the next trigger of its process: the daemon
hears it (LISTEN/NOTIFY on PostgreSQL, a one-second indexed poll elsewhere) and runs the
process that serves its queue at once, when it is idle. A cron task still waits."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.acceptance.conftest import Bgx
from tests.acceptance.test_daemon import Daemon, Tasks, open_tasks, process, write_config

__all__ = ["open_tasks"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(120)

NOOP = "tests.scripted:Noop"


def enqueue(bgx: Bgx, url: str, type_: str) -> tuple[int, float]:
    added = bgx.ok(
        "--database-url", url, "--import", "tests.scripted", "enqueue", "t", NOOP,
        "--type", type_, "-q",
    )  # fmt: skip
    return int(added.stdout), time.monotonic()


def test_an_interactive_task_starts_at_once_a_cron_one_waits(
    bgx: Bgx, db_url: str, tmp_path: Path, open_tasks: Callable[[str], Tasks]
) -> None:
    config = write_config(tmp_path / "bgtaskex.toml", db_url, process("hourly", every="1h"))
    tasks = open_tasks(db_url)
    daemon = Daemon(bgx, tmp_path, config).started()
    daemon.wait_for(lambda: len(daemon.runs()) == 1, "the first run (an interval starts with one)")

    cron, _ = enqueue(bgx, db_url, "cron")
    interactive, queued = enqueue(bgx, db_url, "interactive")
    daemon.wait_for(tasks.finished(interactive), "the interactive task to finish", timeout=15)
    latency = time.monotonic() - queued
    # The cron task is taken by the same woken run (same queue), after the interactive
    # one (run order), so it is done too once that run ends; but a cron task alone wakes
    # nothing:
    daemon.wait_for(tasks.finished(cron), "the cron task, in the same woken run", timeout=5)
    daemon.wait_for(lambda: len(daemon.runs()) == 2, "the woken run's summary line")
    lone_cron, _ = enqueue(bgx, db_url, "cron")
    second = enqueue(bgx, db_url, "interactive")[0]
    daemon.wait_for(tasks.finished(second, lone_cron), "the next interactive task", timeout=15)
    # the run's summary line follows its last commit: wait for it before counting
    daemon.wait_for(lambda: len(daemon.runs()) == 3, "the second woken run's summary line")
    runs_before = len(daemon.runs())
    third_cron, _ = enqueue(bgx, db_url, "cron")
    time.sleep(2.5)  # a bounded look for something that must NOT happen: 2.5 polls
    assert tasks.status(third_cron) == "created"
    assert len(daemon.runs()) == runs_before
    daemon.stop()
    assert "woken by an interactive task in default" in daemon.log()
    print(
        f"\n[wakeup] {db_url.split(':')[0]}: interactive task finished {latency:.2f}s after enqueue"
    )
    assert latency < 5, latency
