"""Deadline precision: how far past its deadline a run ends.

One task of one cooperative action, `bench.deadline:Cooperative`, that never finishes:
its `execute` works in 10 ms chunks (`time.sleep(0.01)`, an action waiting on I/O),
checks `time.time() >= deadline` before each chunk, and returns False (paused) once it is
past. It records in its params the deadline the runner gave it and when it returned. The
run then saves the params, commits `paused`, ends (a task paused by the deadline ends the
run; retention is skipped past the deadline) and releases its lock. The same task is
resumed by every repetition, on the default backend (a SQLite file, synchronous FULL).

Two ways of running, alternating in each repetition:

* **in-process**: `client.run_once(max_execution_time=B)`; the run's end is when the call
  returns (`time.time()`).
* **subprocess**: `bgtaskex --import bench.deadline --database-url URL run-once
  --max-execution-time B --json`; the run's end is when the process has exited and been
  reaped (`time.time()` after `wait()`), so the interpreter's teardown is included.

Per repetition:

* **past own deadline** = end - the deadline the runner computed (`lock time + budget`, as
  passed to `execute` and saved by the action): the figure the target is about;
* **past start + budget** = end - (`time.time()` just before the call or the `Popen`) -
  budget: the same as seen from outside; the subprocess's includes its start-up before the
  lock (the interpreter and imports), which is not part of the budget;
* **action's own** = when `execute` returned - its deadline: the chunk granularity, the
  part of the overshoot that is the action's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bgtaskex import Action

from . import ROOT, BenchError, median
from .startup import _bgtaskex_argv, _clean_env

CHUNK_S = 0.01
BUDGETS_FULL = {1.0: 12, 5.0: 6, 30.0: 2}  # budget: repetitions per mode
BUDGETS_QUICK = {1.0: 5, 5.0: 2}
TARGET_P99_MS = 50.0


class Cooperative(Action):
    """Works in 10 ms chunks until the deadline, then pauses; never finishes."""

    description = "benchmark: cooperative chunks until the deadline"

    def execute(self, deadline: float) -> bool:
        self.params["deadline"] = deadline
        chunks = 0
        while time.time() < deadline:
            time.sleep(CHUNK_S)
            chunks += 1
        self.params["chunks"] = chunks
        self.params["returned_at"] = time.time()
        return False


REF = f"{Cooperative.__module__}:{Cooperative.__qualname__}"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def run(console: Console, *, quick: bool = False) -> dict[str, Any]:
    from bgtaskex.client import connect
    from bgtaskex.config import Settings

    plan = BUDGETS_QUICK if quick else BUDGETS_FULL
    samples: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-deadline-") as tmp:
        base = Path(tmp)
        db, lock, home = base / "bgtaskex.db", base / "run.lock", base / "home"
        url = f"sqlite:///{db}"
        client = connect(
            settings=Settings(database_url=url, lock_file=str(lock), sqlite_synchronous="FULL")
        )
        env = _clean_env(home)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
        argv = [*_bgtaskex_argv(), "--import", Cooperative.__module__, "--database-url", url]
        try:
            tid = client.enqueue("bench-deadline", [REF])

            def action_params() -> dict[str, Any]:
                return dict(client.get(tid).actions[0].params)

            for budget, reps in plan.items():
                for r in range(reps):
                    modes = ["in-process", "subprocess"]
                    for mode in modes if r % 2 == 0 else modes[::-1]:
                        if mode == "in-process":
                            start = time.time()
                            summary = client.run_once(max_execution_time=budget)
                            end = time.time()
                            paused = summary.paused
                        else:
                            start = time.time()
                            proc = subprocess.Popen(
                                [
                                    *argv,
                                    "run-once",
                                    "--max-execution-time",
                                    str(budget),
                                    "--lock-file",
                                    str(lock),
                                    "--json",
                                ],
                                env=env,
                                cwd=ROOT,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL,
                                text=True,
                            )
                            out, err = proc.communicate()
                            end = time.time()
                            if proc.returncode != 0:
                                raise BenchError(f"run-once exit {proc.returncode}: {err[-2000:]}")
                            paused = json.loads(out)["paused"]
                        params = action_params()
                        if paused != 1:
                            raise BenchError(f"deadline {mode} {budget}s: run did not pause once")
                        own = params["deadline"]
                        samples.append(
                            {
                                "mode": mode,
                                "budget_s": budget,
                                "past_own_deadline_ms": (end - own) * 1000,
                                "past_start_plus_budget_ms": (end - start - budget) * 1000,
                                "action_past_deadline_ms": (params["returned_at"] - own) * 1000,
                                "lock_after_start_ms": (own - budget - start) * 1000,
                                "chunks": params["chunks"],
                            }
                        )
                console.print(
                    f"[dim]deadline: budget {budget:g}s x {reps} per mode: past own deadline "
                    + ", ".join(
                        f"{s['mode']} {s['past_own_deadline_ms']:.1f}"
                        for s in samples
                        if s["budget_s"] == budget
                    )
                    + " ms[/dim]"
                )
        finally:
            client.close()
    elapsed = time.monotonic() - began

    rows = []
    groups = [(b, m) for b in plan for m in ("in-process", "subprocess")]
    groups += [(None, m) for m in ("in-process", "subprocess")]
    for budget, mode in groups:
        ss = [
            s for s in samples if s["mode"] == mode and (budget is None or s["budget_s"] == budget)
        ]
        past = [s["past_own_deadline_ms"] for s in ss]
        rows.append(
            {
                "budget_s": budget,
                "mode": mode,
                "n": len(ss),
                "p50_ms": percentile(past, 50),
                "p99_ms": percentile(past, 99),
                "max_ms": max(past),
                "outside_p50_ms": percentile([s["past_start_plus_budget_ms"] for s in ss], 50),
                "outside_max_ms": max(s["past_start_plus_budget_ms"] for s in ss),
                "action_p50_ms": percentile([s["action_past_deadline_ms"] for s in ss], 50),
                "run_after_action_p50_ms": median(
                    [s["past_own_deadline_ms"] - s["action_past_deadline_ms"] for s in ss]
                ),
                "lock_after_start_p50_ms": median([s["lock_after_start_ms"] for s in ss]),
                "met": percentile(past, 99) <= TARGET_P99_MS,
            }
        )

    table = Table(
        title=f"Deadline precision: a cooperative action in {CHUNK_S * 1000:.0f} ms chunks, "
        "ms past the deadline when the run has ended (SQLite FULL)",
        title_justify="left",
    )
    for i, column in enumerate(
        (
            "budget",
            "mode",
            "runs",
            "past own deadline p50",
            "p99",
            "max",
            f"p99 <= {TARGET_P99_MS:.0f} ms",
            "action's part p50",
            "run after the action p50",
            "past start+budget p50 (max)",
            "lock after start p50",
        )
    ):
        table.add_column(column, justify="left" if i < 2 else "right")
    for row in rows:
        table.add_row(
            "all" if row["budget_s"] is None else f"{row['budget_s']:g} s",
            row["mode"],
            str(row["n"]),
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            f"{row['max_ms']:.1f}",
            "[green]yes[/green]" if row["met"] else "[red]no[/red]",
            f"{row['action_p50_ms']:.1f}",
            f"{row['run_after_action_p50_ms']:.1f}",
            f"{row['outside_p50_ms']:.1f} ({row['outside_max_ms']:.1f})",
            f"{row['lock_after_start_p50_ms']:.1f}",
        )
    console.print(table)
    console.print(
        "[dim]own deadline = the value the runner passed to execute (lock time + budget). "
        "p99 is interpolated between the closest ranks: with few runs it is about the max. "
        "'past start+budget' of a subprocess includes its start-up before the lock.[/dim]"
    )
    console.print(f"[dim]deadline benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "chunk_s": CHUNK_S,
        "plan": {str(b): reps for b, reps in plan.items()},
        "python": sys.executable,
        "elapsed_s": elapsed,
        "summary": rows,
        "samples": samples,
    }
