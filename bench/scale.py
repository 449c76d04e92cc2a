"""How the operators' queries and the run scale with the number of tasks, on SQLite.

Databases of 10^4, 10^5 and 10^6 tasks (quick: 10^4, 10^5) are built fast: the schema
through bgtaskex (`Store(url).ensure_schema()`, i.e. the Alembic migration), then rows
bulk-inserted with stdlib sqlite3 `executemany` in big transactions. Each task has one
action and one event; the mix is ~1% waiting (created / paused / running, `run_order` as
`models.run_order` computes it), ~90% finished, ~9% failed, over several queues and both
types, created over 90 days. Built databases are cached under bench/results/scale-cache/
(gitignored), keyed by size, row-format version and schema revision; `--rebuild` forces
a new build. No ANALYZE is run on them: bgtaskex never runs it, so the planner works
without statistics, as it does in the field.

Measured per size (median of several runs, after one warm-up: warm page cache):
the in-process equivalents of `bgtaskex list` (`Store.list_tasks(limit=50)` with no filter,
`--status failed`, `--queue`, `--name 'report*'`, and the `count_tasks` the CLI adds when
the page is full), `next_task`, `stats`, `stuck_tasks`, `purge_preview`, and the wall time
of `bgtaskex list` / `bgtaskex stats` as subprocesses (start-up included). The SQL each call
executes is captured and its EXPLAIN QUERY PLAN printed for the largest size: flat time
from 10^4 to 10^6 means an index range, linear time a full scan (of a table or an index).

Memory: peak RSS (os.wait4 of the child) of `bgtaskex run-once --max-execution-time 1`
on a database with 10 waiting tasks against one with 10^6 tasks, all waiting (quick 10^5),
each task one `bgtaskex.examples:NothingToDo` action (skipped at once: cheap).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import RESULTS_DIR, BenchError, median, quartiles

SIZES_FULL = (10_000, 100_000, 1_000_000)
SIZES_QUICK = (10_000, 100_000)
ALL_WAITING_FULL, ALL_WAITING_QUICK = 1_000_000, 100_000
FEW_WAITING = 10
RUNS_FULL, RUNS_QUICK = 7, 5  # in-process timings per query
CLI_RUNS_FULL, CLI_RUNS_QUICK = 5, 3  # subprocess timings per command
RSS_RUNS = 3
LIST_TARGET_MS = 100.0  # `list` of 50 at 10^6 on SQLite
RSS_TARGET_RATIO = 1.2  # peak RSS of run-once, 10^6 waiting / 10 waiting

CACHE_DIR = RESULTS_DIR / "scale-cache"
ROW_FORMAT = 1  # bump when the generated rows change: cached databases are rebuilt
SEED = 20261128
CHUNK = 50_000  # tasks per transaction while building
SPAN = timedelta(days=90)
NOOP_REF = "bgtaskex.examples:NothingToDo"  # init_params returns False: skipped, no execute

# (queue, share, name prefix): --queue and --name pick from these.
QUEUES = (
    ("default", 0.45, "job"),
    ("reports", 0.20, "report"),
    ("emails", 0.20, "email"),
    ("imports", 0.10, "import"),
    ("billing", 0.045, "invoice"),
    ("rare", 0.005, "audit"),
)
FILTER_QUEUE = "emails"
RARE_QUEUE = "rare"
NAME_GLOB = "report*"
WAITING_STATUSES = (("created", 0.60), ("paused", 0.25), ("running", 0.15))
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/jobs.py", line 118, in execute\n'
    "    rows = self.client.fetch(self.params['cursor'])\n"
    '  File "/srv/app/client.py", line 42, in fetch\n'
    "    raise TimeoutError('upstream did not answer in 30s')\n"
    "TimeoutError: upstream did not answer in 30s\n"
)


# -- building the databases --------------------------------------------------------------


def _stamp(value: datetime) -> str:
    """A timestamp as bgtaskex stores it on SQLite: naive UTC text with microseconds."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _pick(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for value, share in choices:
        x -= share
        if x < 0:
            return value
    return choices[-1][0]


def _rows(
    n: int, built_at: datetime, all_waiting: bool
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(tasks, actions, events) rows, CHUNK tasks at a time, ids 1..n in creation order."""
    from bgtaskex.models import run_order

    rng = random.Random(SEED + n + (1 if all_waiting else 0))
    queues = tuple((q, share) for q, share, _ in QUEUES)
    prefix = {q: p for q, _, p in QUEUES}
    begin = built_at - SPAN
    step = SPAN / max(n, 1)
    for first in range(1, n + 1, CHUNK):
        tasks, actions, events = [], [], []
        for task_id in range(first, min(first + CHUNK, n + 1)):
            created = begin + step * task_id
            queue = _pick(rng, queues)
            type_ = "interactive" if rng.random() < 0.2 else "cron"
            x = rng.random()
            if all_waiting:
                status = "created"
            elif x < 0.01:
                status = _pick(rng, WAITING_STATUSES)
            elif x < 0.10:
                status = "failed"
            else:
                status = "finished"
            order = run_order(type_, status)
            ended = status in ("finished", "failed")
            ran = status != "created"
            took = rng.uniform(0.05, 600.0)
            started = created + timedelta(seconds=rng.uniform(0.0, 60.0))
            ended_at = started + timedelta(seconds=took) if ended else None
            updated = ended_at or (started if ran else created)
            run_id = f"{rng.getrandbits(64):016x}" if ran else None
            tasks.append(
                (
                    task_id,
                    f"{prefix[queue]}-{task_id}",
                    type_,
                    queue,
                    status,
                    order,
                    1 if ran else None,
                    run_id,
                    _stamp(created),
                    _stamp(updated),
                    _stamp(ended_at) if ended_at else None,
                    None,
                )
            )
            action_status = {
                "finished": "done",
                "failed": "failed",
                "created": "pending",
            }.get(status, "active")
            params = json.dumps({"cursor": rng.randrange(10_000), "chunk": 500})
            progress = (
                (rng.uniform(0, 100), 100.0, "working") if status in ("paused", "running") else None
            )
            actions.append(
                (
                    task_id,  # one action per task: its id is the task's
                    task_id,
                    1,
                    NOOP_REF,
                    action_status,
                    5 if status == "failed" else (1 if ran else 0),
                    params,
                    params,
                    _stamp(started) if ran else None,
                    _stamp(ended_at) if ended_at else None,
                    *(progress or (None, None, None)),
                    took if ended else 0.0,
                )
            )
            if status == "created":
                event = (None, None, None, "created", "enqueued with 1 action(s)", None)
            elif status == "failed":
                event = (run_id, 1, "running", "failed", "action 1 failed 5 times", TRACEBACK)
            else:
                event = (run_id, 1, "running", status, f"action 1 {status}", None)
            events.append((task_id, task_id, _stamp(updated), *event))
        yield tasks, actions, events


def build(path: Path, n: int, *, all_waiting: bool = False) -> dict[str, Any]:
    """Create the schema through bgtaskex, then bulk-insert `n` tasks with stdlib sqlite3."""
    from bgtaskex.store import Store

    began = time.perf_counter()
    built_at = datetime.now(UTC)
    tmp = path.with_name(path.name + ".building")
    for stale in tmp.parent.glob(tmp.name + "*"):
        stale.unlink()
    store = Store(f"sqlite:///{tmp}")
    try:
        store.ensure_schema()
    finally:
        store.close()
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        # A throw-away file until it is renamed: no journal, no fsync, a big page cache.
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        for tasks, actions, events in _rows(n, built_at, all_waiting):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO bgtaskex_tasks (id, name, type, queue, status, run_order, "
                "current_rank, last_run_id, created_at, updated_at, ended_at, "
                "cancel_requested_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                tasks,
            )
            conn.executemany(
                "INSERT INTO bgtaskex_actions (id, task_id, rank, ref, status, attempts, "
                "params, initial_params, started_at, ended_at, progress_done, "
                "progress_total, progress_message, elapsed) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                actions,
            )
            conn.executemany(
                "INSERT INTO bgtaskex_events (id, task_id, at, run_id, rank, old_status, "
                "new_status, message, error) VALUES (?,?,?,?,?,?,?,?,?)",
                events,
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")  # as bgtaskex leaves its databases
        counts = dict(
            conn.execute("SELECT status, count(*) FROM bgtaskex_tasks GROUP BY status").fetchall()
        )
    finally:
        conn.close()
    tmp.rename(path)
    meta = {
        "tasks": n,
        "all_waiting": all_waiting,
        "built_at": built_at.isoformat(timespec="seconds"),
        "build_s": time.perf_counter() - began,
        "statuses": counts,
        "bytes": path.stat().st_size,
        "row_format": ROW_FORMAT,
    }
    _meta_path(path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def cached(n: int, *, all_waiting: bool = False, rebuild: bool = False) -> tuple[Path, dict[str, Any]]:
    """The cached database of `n` tasks (built when missing or stale) and its metadata."""
    from bgtaskex.probe import HEAD_REVISION

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    kind = "waiting" if all_waiting else "mixed"
    path = CACHE_DIR / f"{kind}-{n}-r{HEAD_REVISION}-f{ROW_FORMAT}.db"
    meta_path = _meta_path(path)
    if not rebuild and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["cached"] = True
        return path, meta
    for old in CACHE_DIR.glob(path.name + "*"):
        old.unlink()
    meta = build(path, n, all_waiting=all_waiting)
    meta["cached"] = False
    return path, meta
