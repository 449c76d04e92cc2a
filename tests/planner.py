"""Planner callables for a process's `callable` key (`"tests.planner:plan"`).

A planner is called with the `Client` when its process is due, with the run lock held.

`plan` records whether the lock was held while it ran, then enqueues one `Noop` task on
queue "planned". In-process its calls are appended to `CALLS`; in a subprocess, when
the environment variable `LOG_ENV` names a file, one JSON line per call goes there.

`hang` never returns. `explode` raises an error whose message holds a database password
(masking tests).
"""

from __future__ import annotations

import json
import os
from typing import Any

from bgtaskex.client import Client
from bgtaskex.run.file_lock import lock_is_held

PLANNED_QUEUE = "planned"
LOG_ENV = "BGX_TEST_PLANNER_LOG"
SECRET = "hunter2"

#: Every in-process call of `plan`: {"lock_held", "task_id", "pid", "client"}.
CALLS: list[dict[str, Any]] = []


def plan(client: Client) -> None:
    held = lock_is_held(client.settings.lock_path)
    task_id = client.enqueue("planned", ["tests.scripted:Noop"], queue=PLANNED_QUEUE)
    record = {"lock_held": held, "task_id": task_id, "pid": os.getpid(), "ppid": os.getppid()}
    CALLS.append({**record, "client": client})
    path = os.environ.get(LOG_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


def hang(client: Client) -> None:
    """Never returns: the run's watchdog ends it at the deadline + kill_after (exit 7)."""
    import time

    while True:
        time.sleep(60)


def explode(client: Client) -> None:
    raise RuntimeError(f"planner cannot reach postgresql://planner:{SECRET}@db.invalid/jobs")
