"""`bgtaskex show` of a task of 100,000 actions and 2**17 events, on SQLite and PostgreSQL.

The task is built by the database itself (one enqueued action, then INSERT ... SELECT
doubling the actions and the events 17 times, the actions cut back to 100,000), at action
60,000. Measured, alternating, median of N runs after one warm-up: the wall time of
`bgtaskex show ID` and `bgtaskex show ID --json` as subprocesses (start-up included;
`show` of a task of one action is the floor of that start-up on the same machine), and
in-process the page `show` reads (`Store.get_task_page` + `Store.admin.recent_events`, 50 of
each with the counts) against the whole task (`Store.get_task` + `Store.events`, what
`show` read before it had pages). Target: `show` under 1 s.

Then the listings of that task among 49 of one action (50 tasks): `Store.list_tasks` and
`Store.page_tasks` (a page of 50), which read of a long task only the actions a listing
shows (store/listed.py), against `list_tasks` plus every action of the listed tasks (what
a listing read before). Target: a listing under 50 ms.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import ROOT, BenchError, masked, median, rotated
from .scratch import postgres_schema, with_options

CHAIN = 100_000
DOUBLINGS = 17  # 2**17 events
RUNS_FULL, RUNS_QUICK = 5, 3
KEYS = ("show", "show --json", "show (1 action)", "page (in-process)", "whole task (in-process)")
LIST_KEYS = ("list_tasks", "page_tasks", "list, every action (before)")
TARGET_S = 1.0
LIST_TARGET_S = 0.05
SHORT_TASKS = 49
NOOP = "bgtaskex.examples:NothingToDo"


def _long_chain(url: str) -> int:
    """A task of CHAIN actions at action 60,000 with 2**DOUBLINGS events; its id."""
    from sqlalchemy import delete, insert, select, update

    from bgtaskex import tables as t
    from bgtaskex.client import connect

    with connect(url) as client:
        task_id = client.enqueue("long chain", [(NOOP, {"n": 1})])
        copied = {
            t.actions: ["ref", "status", "attempts", "params", "initial_params", "elapsed"],
            t.events: ["at", "run_id", "old_status", "new_status", "message", "error"],
        }
        with client.store._engine.begin() as conn:
            for step in range(DOUBLINGS):
                for table, columns in copied.items():
                    c = table.c
                    rank = c.rank + 2**step if table is t.actions else c.rank
                    rows = select(c.task_id, rank, *(c[n] for n in columns))
                    conn.execute(
                        insert(table).from_select(
                            ["task_id", "rank", *columns], rows.where(c.task_id == task_id)
                        )
                    )
            a = t.actions.c
            conn.execute(delete(t.actions).where(a.task_id == task_id, a.rank > CHAIN))
            conn.execute(
                update(t.tasks)
                .where(t.tasks.c.id == task_id)
                .values(current_rank=60_000, status="paused")
            )
    return task_id


def _timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return time.perf_counter() - began


def _cli(url: str, *args: str) -> Callable[[], object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGTASKEX_")}
    argv = [sys.executable, "-m", "bgtaskex", "--database-url", url, *args]

    def call() -> object:
        proc = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(args)}: exit {proc.returncode}: {proc.stderr[:500]}")
        return proc

    return call


def _measure(url: str, runs: int) -> dict[str, Any]:
    from bgtaskex.models import NewAction, TaskType
    from bgtaskex.store import Store, reads

    task_id = _long_chain(url)
    store = Store(url)
    small = store.enqueue("short", TaskType.CRON, "default", [NewAction(NOOP)])
    for _ in range(SHORT_TASKS - 1):
        store.enqueue("short", TaskType.CRON, "default", [NewAction(NOOP)])

    def every_action() -> object:
        listed = store.list_tasks(limit=50)
        with store._read() as conn:
            return reads.actions_of(conn, [task.id for task in listed])

    try:
        calls = {
            "show": _cli(url, "show", str(task_id)),
            "show --json": _cli(url, "show", str(task_id), "--json"),
            "show (1 action)": _cli(url, "show", str(small)),
            "page (in-process)": lambda: (
                store.get_task_page(task_id, 50),
                store.admin.recent_events(task_id, 50),
            ),
            "whole task (in-process)": lambda: (store.get_task(task_id), store.events(task_id)),
            "list_tasks": lambda: store.list_tasks(limit=50),
            "page_tasks": lambda: store.page_tasks(None, None, 50, 10_000),
            "list, every action (before)": every_action,
        }
        samples: dict[str, list[float]] = {key: [] for key in calls}
        for call in calls.values():  # warm-up
            call()
        for r in range(runs):
            for key in rotated(list(calls), r):
                samples[key].append(_timed(calls[key]))
    finally:
        store.close()
    return {key: {"median_s": median(v), "samples_s": v} for key, v in samples.items()}


def run(
    console: Console, *, quick: bool = False, postgres_url: str, use_postgres: bool = True
) -> dict[str, Any]:
    runs = RUNS_QUICK if quick else RUNS_FULL
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-show-") as tmp:
        results["sqlite"] = _measure(f"sqlite:///{Path(tmp) / 'show.db'}", runs)
    if use_postgres:
        results.update(_on_postgres(console, postgres_url, runs))
    table = Table(
        title=f"show of a task of {CHAIN:,} actions, {2**DOUBLINGS:,} events: median of {runs}",
        title_justify="left",
    )
    table.add_column("backend")
    for key in KEYS:
        table.add_column(f"{key} s", justify="right")
    for backend, found in results.items():
        table.add_row(backend, *(f"{found[key]['median_s']:.3f}" for key in KEYS))
    console.print(table)
    worst = max(max(r["show"]["median_s"], r["show --json"]["median_s"]) for r in results.values())
    added = max(
        max(r["show"]["median_s"], r["show --json"]["median_s"]) - r["show (1 action)"]["median_s"]
        for r in results.values()
    )
    met = "[green]yes[/green]" if worst < TARGET_S else "[red]no[/red]"
    console.print(
        f"target: show under {TARGET_S:g} s: {worst:.2f} s at worst, met: {met}; the 100,000 "
        f"actions add {added:+.2f} s at worst to the show of a 1-action task (the rest is "
        "start-up, which a loaded machine stretches)\n"
    )
    listing = _listing_table(results, runs)
    console.print(listing["table"])
    met = "[green]yes[/green]" if listing["worst_s"] < LIST_TARGET_S else "[red]no[/red]"
    console.print(
        f"target: a listing under {LIST_TARGET_S * 1000:g} ms: "
        f"{listing['worst_s'] * 1000:.1f} ms at worst, met: {met}\n"
    )
    return {
        "list_target_s": LIST_TARGET_S,
        "list_worst_s": listing["worst_s"],
        "runs": runs,
        "results": results,
        "target_s": TARGET_S,
        "worst_s": worst,
        "added_over_one_action_s": added,
    }


def _listing_table(results: dict[str, Any], runs: int) -> dict[str, Any]:
    table = Table(
        title=(
            f"listings of 50 tasks, one of {CHAIN:,} actions: median of {runs}, ms "
            "(before: every action of the listed tasks read)"
        ),
        title_justify="left",
    )
    table.add_column("backend")
    for key in LIST_KEYS:
        table.add_column(f"{key} ms", justify="right")
    for backend, found in results.items():
        table.add_row(backend, *(f"{found[key]['median_s'] * 1000:.1f}" for key in LIST_KEYS))
    worst = max(
        max(r["list_tasks"]["median_s"], r["page_tasks"]["median_s"]) for r in results.values()
    )
    return {"table": table, "worst_s": worst}


def _on_postgres(console: Console, url: str, runs: int) -> dict[str, Any]:
    """The same on a scratch schema of the PostgreSQL server, dropped afterwards."""
    with contextlib.ExitStack() as stack:
        try:
            schema = stack.enter_context(postgres_schema(url))
        except Exception as err:  # no server: skip its row, say why
            console.print(f"[yellow]show: PostgreSQL skipped ({masked(str(err))[:200]})[/yellow]")
            return {}
        return {"postgresql": _measure(with_options(url, f"search_path={schema}"), runs)}
