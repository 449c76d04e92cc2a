"""Queues an operator can pause, with the real command in subprocesses (#15, part 3).

A pause issued from another process while a run executes a chain of that queue lets
the current hook finish and stops the chain before its next action; the other queues
run on; resume gives the task back. A daemon does not spin on a paused queue's due
interactive task, and picks it up once the queue is resumed (NOTIFY on PostgreSQL, its
poll elsewhere).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.models import ActionStatus, TaskStatus
from bgtaskex.run.pauses import CHECK_EVERY
from tests.acceptance.conftest import Bgx, hooks, wait_until
from tests.acceptance.test_daemon import Daemon, Tasks, open_tasks, process, write_config
from tests.conftest import TEST_RETRY_DELAY
from tests.support import journal

__all__ = ["open_tasks"]  # the fixture, used by name

pytestmark = pytest.mark.timeout(120)

IMPORTS = ("--import", "tests.scripted", "--import", "tests.ops_actions")
NOOP = "tests.scripted:Noop"


def test_a_pause_stops_a_chain_before_its_next_action(
    bgx: Bgx, db_url: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The run is a `run-once` subprocess, the pause another `bgtaskex` process."""
    log, go = tmp_path / "calls.jsonl", tmp_path / "go"
    settings = Settings(
        database_url=db_url,
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted", "tests.ops_actions"),
        retry_delay=TEST_RETRY_DELAY,
    )
    client = connect(settings=settings)
    request.addfinalizer(client.close)
    task = client.enqueue(
        "chain",
        [
            ("tests.ops_actions:WaitFile", {"file": str(go), "log": str(log), "name": "A"}),
            ("tests.scripted:Scripted", {"log": str(log), "name": "B"}),
        ],
        queue="reports",
    )
    other = client.enqueue("other", ["tests.scripted:Noop"])
    db = ("--database-url", db_url, *IMPORTS)
    run = bgx.start(*db, "run-once", "--max-execution-time", "60")
    wait_until(lambda: hooks(log) == ["execute"], "A's execute to start", proc=run)
    began = time.monotonic()
    bgx.ok(*db, "pause", "reports", "--reason", "maintenance")
    # The worker reads its task's queue again once CHECK_EVERY has passed since the
    # pick: A's execute (the current hook) returns after that, and after the pause.
    wait_until(lambda: time.monotonic() - began > CHECK_EVERY, "the pause check interval")
    go.touch()
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert out.startswith("run ") and " 1 finished, 1 paused," in out, out + err
    assert hooks(log) == ["execute"], "B ran in a paused queue"

    chain = client.get(task)
    assert chain.status == TaskStatus.CREATED, chain
    assert [a.status for a in chain.actions] == [ActionStatus.DONE, ActionStatus.PENDING]
    assert client.events(task)[-1].message == "queue reports paused before action 2"
    assert client.get(other).status == TaskStatus.FINISHED

    assert client.run_once().actions == 0  # still paused: nothing of it runs
    client.resume("reports")
    assert client.run_once().finished == 1
    assert [(e["name"], e["hook"]) for e in journal.read(log)][-1] == ("B", "execute")
    assert client.get(task).status == TaskStatus.FINISHED


def test_the_daemon_does_not_spin_on_a_paused_queue(
    bgx: Bgx, db_url: str, tmp_path: Path, open_tasks: Callable[[str], Tasks]
) -> None:
    """An interactive task waits in a paused queue: the daemon's poll (every 0.2 s
    here) passes it over, and an enqueue into the paused queue does not wake it (no
    NOTIFY on PostgreSQL), so no run is made for them; once resumed (by another
    process), they run at once."""
    config = write_config(
        tmp_path / "bgtaskex.toml",
        db_url,
        process("hourly", every="1h"),
        concurrency='{ poll = "0.2s" }',
    )
    tasks = open_tasks(db_url)
    tasks.client.pause("q")
    task = tasks.client.enqueue("t", [NOOP], queue="q", type="interactive")
    daemon = Daemon(bgx, tmp_path, config).started()
    daemon.wait_for(lambda: len(daemon.runs()) == 1, "the first run (an interval starts with one)")
    more = []
    for i in range(5):  # the daemon is listening now: each enqueue would wake it
        more.append(tasks.client.enqueue(f"t{i}", [NOOP], queue="q", type="interactive"))
        time.sleep(0.1)
    time.sleep(1.5)  # a bounded look for something that must NOT happen: 10 polls
    assert len(daemon.runs()) == 1, daemon.log()
    assert tasks.status(task) == "created"
    tasks.client.resume("q")
    resumed = time.monotonic()
    daemon.wait_for(tasks.finished(task, *more), "the resumed queue's tasks to run", timeout=15)
    latency = time.monotonic() - resumed
    daemon.stop()
    assert "woken by an interactive task in q" in daemon.log()
    assert len(daemon.runs()) == 2, daemon.log()
    assert latency < 5, latency
