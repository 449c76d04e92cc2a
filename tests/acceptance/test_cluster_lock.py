"""`lock = "database"` between real `bgtaskex run-once` processes, on PostgreSQL (an
advisory lock per schema) and MariaDB (GET_LOCK per database): one run at a time in the
cluster, whatever lock file each host has; a second run says the database lock is held
and does nothing (exit 0); `cancel` of the task being executed waits for its
checkpoint; once the holder is gone, the next run takes the lock."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.acceptance.conftest import Bgx, finish, hook_started, hooks, scripted, wait_until

pytestmark = pytest.mark.timeout(120)

IMPORT = ("--import", "tests.scripted")


def test_one_run_in_the_cluster(bgx: Bgx, server_url: str, tmp_path: Path) -> None:
    env = {**bgx.env, "BGTASKEX_CONCURRENCY": "lock=database"}
    log = tmp_path / "calls.jsonl"
    plan = {"execute": ["until-stop", "true"]}
    added = bgx.ok(
        "--database-url", server_url, *IMPORT, "enqueue", "slow", scripted(log, plan), "-q"
    )
    task_id = int(added.stdout)
    # Two "hosts": each its own lock file, which this mode does not use.
    holder = bgx.start(
        "--database-url", server_url, *IMPORT, "run-once", "--lock-file", tmp_path / "a.lock",
        "--max-execution-time", "60", env=env,
    )  # fmt: skip
    wait_until(hook_started(log, "execute", holder.pid), "the holder's execute", proc=holder)

    second = bgx(
        "--database-url", server_url, *IMPORT, "run-once", "--lock-file", tmp_path / "b.lock",
        env=env,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "holds the database lock" in second.stdout + second.stderr, (
        second.stdout,
        second.stderr,
    )
    assert hooks(log) == ["init", "execute"], "a run without the lock calls no hook"

    asked = bgx.ok("--database-url", server_url, "cancel", task_id, env=env)
    assert "will be cancelled at its next checkpoint" in asked.stdout, asked.stdout

    holder.send_signal(signal.SIGTERM)  # the action stops when asked
    code, out, err = finish(holder)
    assert code == 0, (out, err)
    # The holder's last write found the cancel request and ended the task.
    assert bgx.show(server_url, task_id)["status"] == "cancelled"

    log.unlink()
    plan = {"execute": ["true"]}
    more = bgx.ok(
        "--database-url", server_url, *IMPORT, "enqueue", "next", scripted(log, plan), "-q"
    )
    after = bgx.ok(
        "--database-url", server_url, *IMPORT, "run-once", "--lock-file", tmp_path / "b.lock",
        env=env,
    )  # fmt: skip
    assert "1 finished" in after.stdout, after.stdout
    assert bgx.show(server_url, int(more.stdout))["status"] == "finished"
