"""Scale-out: tasks/s with 1, 2, 4 and 8 workers claiming tasks on PostgreSQL
(`[concurrency] lock = "none"`).

Two workloads of single-action tasks: `Noop` (execute returns True at once: what the
workers cost each other in the database) and `Sleep20` (execute sleeps 20 ms: I/O-bound
work, where workers should add up). Two ways to get N workers, each a real
`bgtaskex run-once` (what cron starts), all launched at the same instant:

* threads:   ONE process, `BGTASKEX_CONCURRENCY="lock=none workers=N"`;
* processes: N processes, `BGTASKEX_CONCURRENCY="lock=none workers=1"` each.

Each measurement gets a scratch schema, filled beforehand (untimed, through the Python
client with synchronous_commit=off) and dropped afterwards. The rate is tasks / drain
time, the drain being read from the database: from the first event any worker wrote to
the last task's `ended_at`, so the interpreters' start-up is left out (it is in the wall
time, from the launch to the last exit, also reported). Every run must exit 0 and the
tasks must all end finished, each claimed once (claim_token 1), none lost.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bgtaskex import Action

from . import ROOT, BenchError, masked, median, rotated
from .scratch import postgres_problem, postgres_schema, with_options

WORKER_COUNTS = (1, 2, 4, 8)
MODES = ("threads", "processes")
NOOP_FULL, NOOP_QUICK = 4_000, 400
SLEEP_FULL, SLEEP_QUICK = 1_000, 200
SLEEP_SECONDS = 0.020
LEASE = "60s"
BUDGET = 600  # --max-execution-time of each run-once: far more than a drain takes
TIMEOUT = 900  # seconds a measurement may take before the benchmark gives up


class Noop(Action):
    """Done at once; keeps the inherited init_params (no `starting` write)."""

    description = "benchmark no-op"

    def execute(self, deadline: float) -> bool:
        return True


class Sleep20(Action):
    """Waits 20 ms (I/O-bound work), then is done."""

    description = "benchmark 20 ms sleep"

    def execute(self, deadline: float) -> bool:
        time.sleep(SLEEP_SECONDS)
        return True


@dataclass(frozen=True)
class Workload:
    key: str
    label: str
    ref: str
    tasks: int


def _ref(cls: type[Action]) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def fill(fast_url: str, workload: Workload) -> None:
    """The schema and the tasks, durability off (untimed)."""
    from bgtaskex.client import connect
    from bgtaskex.config import Settings

    with connect(settings=Settings(database_url=fast_url)) as client:
        for i in range(workload.tasks):
            client.enqueue(f"bench-{i}", [workload.ref])
    os.sync()  # the fill's dirty pages are not the drain's to pay for


def _env(home: Path, url: str, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGTASKEX_")}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / ".config"),
        XDG_DATA_HOME=str(home / ".local" / "share"),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        BGTASKEX_DATABASE_URL=url,
        BGTASKEX_CONCURRENCY=f"lock=none workers={workers} lease={LEASE}",
    )
    return env


def _drain_window(url: str) -> tuple[float, float, dict[str, int]]:
    """(first event written by a run, last ended_at) as epoch seconds, and the tasks by
    status and by claim token."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            first = conn.execute(
                sqlalchemy.text("SELECT min(at) FROM bgtaskex_events WHERE run_id IS NOT NULL")
            ).scalar()
            last = conn.execute(
                sqlalchemy.text("SELECT max(ended_at) FROM bgtaskex_tasks")
            ).scalar()
            counts = {
                f"{key}:{value}": n
                for key, value, n in conn.execute(
                    sqlalchemy.text(
                        "SELECT 'status', status, count(*) FROM bgtaskex_tasks GROUP BY status "
                        "UNION ALL SELECT 'token', claim_token::text, count(*) "
                        "FROM bgtaskex_tasks GROUP BY claim_token"
                    )
                )
            }
    finally:
        engine.dispose()
    if first is None or last is None:
        raise BenchError("no run wrote anything")
    return first.timestamp(), last.timestamp(), counts


def measure(workload: Workload, mode: str, workers: int, pg_url: str, home: Path) -> dict[str, Any]:
    processes, per_process = (1, workers) if mode == "threads" else (workers, 1)
    with postgres_schema(pg_url) as schema:
        url = with_options(pg_url, f"search_path={schema}")
        fast_url = with_options(pg_url, f"search_path={schema}", "synchronous_commit=off")
        fill(fast_url, workload)
        env = _env(home, url, per_process)
        args = [sys.executable, "-m", "bgtaskex", "--import", __name__, "run-once", "--json",
                "--max-execution-time", str(BUDGET)]  # fmt: skip
        cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        launched = time.time()
        began = time.perf_counter()
        procs = [
            subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for _ in range(processes)
        ]
        outputs = []
        try:
            for proc in procs:
                outputs.append(proc.communicate(timeout=TIMEOUT))
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.communicate()
        wall_s = time.perf_counter() - began
        cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        what = f"{workload.label}, {mode}, {workers} worker(s)"
        summaries = []
        for proc, (out, err) in zip(procs, outputs, strict=True):
            if proc.returncode != 0:
                raise BenchError(f"{what}: run-once exited {proc.returncode}: {err.strip()}")
            summaries.append(json.loads(out))
        first, last, counts = _drain_window(url)
    n = workload.tasks
    total = {
        key: sum(int(s.get(key) or 0) for s in summaries)
        for key in ("finished", "failed", "errored", "errors", "lost", "actions")
    }
    expected = {"status:finished": n, "token:1": n}
    if counts != expected or total["finished"] != n or total["lost"]:
        raise BenchError(f"{what}: unexpected end: {counts}, runs {total}")
    drain_s = last - first
    cpu_s = (cpu_after.ru_utime + cpu_after.ru_stime) - (cpu_before.ru_utime + cpu_before.ru_stime)
    return {
        "workload": workload.key,
        "mode": mode,
        "workers": workers,
        "processes": processes,
        "workers_per_process": per_process,
        "tasks": n,
        "drain_s": drain_s,
        "wall_s": wall_s,
        "start_to_first_write_s": first - launched,
        "tasks_per_s": n / drain_s,
        "wall_tasks_per_s": n / wall_s,
        "children_cpu_s": cpu_s,
        "finished_per_process": [int(s.get("finished") or 0) for s in summaries],
    }


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    rounds: int = 1,
) -> dict[str, Any]:
    workloads = [
        Workload("noop", "no-op", _ref(Noop), NOOP_QUICK if quick else NOOP_FULL),
        Workload("sleep20", "sleep 20 ms", _ref(Sleep20), SLEEP_QUICK if quick else SLEEP_FULL),
    ]
    problem = "disabled by --no-postgres" if not use_postgres else postgres_problem(postgres_url)
    if problem is not None:
        console.print(f"[yellow]workers benchmark skipped (PostgreSQL only): {problem}[/yellow]")
        return {"skipped": problem}

    results: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-workers-") as tmp:
        home = Path(tmp)
        for r in range(rounds):
            for workload in workloads:
                for workers in rotated(WORKER_COUNTS, r):
                    for mode in rotated(MODES, r + workers):
                        one = measure(workload, mode, workers, postgres_url, home)
                        one["round"] = r
                        results.append(one)
                        console.print(
                            f"[dim]round {r + 1}/{rounds} {workload.label:<11} {mode:<9} "
                            f"{workers} worker(s): drain {one['drain_s']:.2f}s "
                            f"({one['tasks_per_s']:.0f} tasks/s), wall {one['wall_s']:.2f}s[/dim]"
                        )
    summary = _summarise(results, workloads)
    _print_table(console, summary, rounds)
    elapsed = time.monotonic() - began
    console.print(f"[dim]workers benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "rounds": rounds,
        "postgres_url": masked(postgres_url),
        "worker_counts": list(WORKER_COUNTS),
        "sizes": {w.key: w.tasks for w in workloads},
        "sleep_seconds": SLEEP_SECONDS,
        "lease": LEASE,
        "cpu_count": os.cpu_count(),
        "elapsed_s": elapsed,
        "summary": summary,
        "measurements": results,
    }


def _summarise(results: list[dict[str, Any]], workloads: list[Workload]) -> list[dict[str, Any]]:
    summary = []
    for workload in workloads:
        for mode in MODES:
            base: float | None = None
            for workers in WORKER_COUNTS:
                ms = [
                    m
                    for m in results
                    if (m["workload"], m["mode"], m["workers"]) == (workload.key, mode, workers)
                ]
                rate = median([m["tasks_per_s"] for m in ms])
                if workers == 1:
                    base = rate
                summary.append(
                    {
                        "workload": workload.key,
                        "label": workload.label,
                        "tasks": workload.tasks,
                        "mode": mode,
                        "workers": workers,
                        "tasks_per_s": rate,
                        "speedup": rate / base if base else None,
                        "drain_s": median([m["drain_s"] for m in ms]),
                        "wall_s": median([m["wall_s"] for m in ms]),
                        "wall_tasks_per_s": median([m["wall_tasks_per_s"] for m in ms]),
                        "children_cpu_s": median([m["children_cpu_s"] for m in ms]),
                    }
                )
    return summary


def _print_table(console: Console, summary: list[dict[str, Any]], rounds: int) -> None:
    what = "median of " + (f"{rounds} rounds" if rounds > 1 else "1 round")
    table = Table(
        title=f"Workers claiming tasks on PostgreSQL (lock = none): tasks/s over the drain, "
        f"speed-up over 1 worker of the same mode; wall = launch to last exit ({what}; "
        f"{os.cpu_count()} CPUs)",
        title_justify="left",
    )
    columns = [
        "workload",
        "workers",
        "threads tasks/s",
        "x 1 worker",
        "wall s",
        "processes tasks/s",
        "x 1 worker",
        "wall s",
    ]
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    rows = {(s["workload"], s["mode"], s["workers"]): s for s in summary}
    for key, label, tasks in dict.fromkeys(
        (s["workload"], s["label"], s["tasks"]) for s in summary
    ):
        for workers in WORKER_COUNTS:
            cells = []
            for mode in MODES:
                row = rows[(key, mode, workers)]
                cells += [
                    f"{row['tasks_per_s']:.0f}",
                    f"{row['speedup']:.2f}x",
                    f"{row['wall_s']:.1f}",
                ]
            table.add_row(f"{label} ({tasks} tasks)" if workers == 1 else "", str(workers), *cells)
    console.print(table)
