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


def test_a_task_waiting_for_a_module_does_not_make_the_poll_spin(
    bgx: Bgx, tmp_path: Path, open_tasks: Callable[[str], Tasks]
) -> None:
    """An interactive task whose module the daemon cannot import stays waiting, and the
    poll keeps finding it: each woken run logged the same error and recorded a run,
    every poll (10 a second here), day and night. A run that moves nothing on now makes
    the poll wait longer each time (up to a minute); a task it can run still runs."""
    url = f"sqlite:///{tmp_path / 'q.db'}"
    config = write_config(
        tmp_path / "bgtaskex.toml",
        url,
        process("hourly", every="1h"),
        concurrency='{ poll = "0.1s" }',
    )
    daemon = Daemon(bgx, tmp_path, config).started()
    daemon.wait_for(lambda: len(daemon.runs()) == 1, "the first run (an interval starts with one)")
    bgx.ok(
        "--database-url", url, "--import", "tests.ops_actions", "enqueue", "stranded",
        "tests.ops_actions:Snoozer", "--type", "interactive", "-q",
    )  # fmt: skip
    daemon.wait_for(lambda: "left waiting" in daemon.log(), "a run to leave the task waiting")
    before = len(daemon.runs())
    time.sleep(2)  # a bounded look at what must NOT happen: 20 polls
    stranded_runs = len(daemon.runs()) - before
    assert stranded_runs <= 5, daemon.runs()  # 0.1, 0.2, 0.4, 0.8 s apart at least
    runnable, _ = enqueue(bgx, url, "interactive")
    daemon.wait_for(open_tasks(url).finished(runnable), "a runnable task", timeout=15)
    daemon.stop()
