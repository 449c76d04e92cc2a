"""Scale-out: tasks/s with 1, 2, 4 and 8 workers claiming tasks on PostgreSQL
(`[concurrency] lock = "none"`).

Two workloads of single-action tasks: `Noop` (execute returns True at once: what the
workers cost each other in the database) and `Sleep20` (execute sleeps 20 ms: I/O-bound
work, where workers should add up). Two ways to get N workers, each a real
`bgtaskex run-once` (what cron starts), all launched at the same instant:

* threads:   ONE process, `BGTASKEX_CONCURRENCY="lock=none workers=N"`;
* processes: N processes, `BGTASKEX_CONCURRENCY="lock=none workers=1"` each.

The target of issue #17 is measured too, in each round beside the grid, its two sides in
a rotated order: 4 workers in 2 processes (`workers=2` each, the "mixed" layout) draining
`TARGET_FULL` no-op tasks, against Procrastinate c=4 draining as many
(`peers.drain_procrastinate`: in-process worker, pool opened before timing). The ratio is
taken per round, then the median (`targets`).

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

from . import ROOT, BenchError, masked, median, peers, rotated
from .scratch import postgres_problem, postgres_schema, with_options

WORKER_COUNTS = (1, 2, 4, 8)
MODES = ("threads", "processes")
NOOP_FULL, NOOP_QUICK = 4_000, 400
# The target of issue #17: 4 workers in 2 processes, >= 3x Procrastinate c=4.
TARGET_PROCESSES, TARGET_PER_PROCESS = 2, 2
TARGET_VS_PROCRASTINATE_C4 = 3.0
TARGET_FULL, TARGET_QUICK = 4_000, 1_000
RAW_SECONDS = 0.5  # the bare-driver commit rate peers.drain_procrastinate samples
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


def layout(mode: str, workers: int) -> tuple[int, int]:
    """(processes, workers per process) of `workers` workers in `mode`."""
    if mode == "threads":
        return 1, workers
    if mode == "processes":
        return workers, 1
    return TARGET_PROCESSES, workers // TARGET_PROCESSES  # "mixed"


def measure(workload: Workload, mode: str, workers: int, pg_url: str, home: Path) -> dict[str, Any]:
    processes, per_process = layout(mode, workers)
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


def measure_target(side: str, tasks: int, pg_url: str, home: Path) -> dict[str, Any]:
    """One side of the target: bgtaskex in the "mixed" layout, or Procrastinate c=4."""
    if side == "bgtaskex":
        workload = Workload("noop", "no-op", _ref(Noop), tasks)
        workers = TARGET_PROCESSES * TARGET_PER_PROCESS
        one = measure(workload, "mixed", workers, pg_url, home)
        one["cpu_ms_per_task"] = 1000 * one["children_cpu_s"] / tasks
    else:
        m = peers.drain_procrastinate(tasks, 4, pg_url, RAW_SECONDS)
        one = {
            "tasks": tasks,
            "drain_s": m["drain_s"],
            "tasks_per_s": tasks / m["drain_s"],
            "cpu_ms_per_task": 1000 * m["cpu_s"] / tasks,
            "statements_per_task": m["statements"] / tasks,
        }
    one["side"] = side
    return one


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The target of issue #17 from `run`'s result: bgtaskex's tasks/s over Procrastinate
    c=4's, per round, the median of the rounds; [] when it was not measured."""
    ms = result.get("target_measurements") or []
    by = {(m["round"], m["side"]): m for m in ms}
    rounds = sorted({m["round"] for m in ms})
    ratios = [
        by[(r, "bgtaskex")]["tasks_per_s"] / by[(r, "procrastinate")]["tasks_per_s"]
        for r in rounds
        if (r, "bgtaskex") in by and (r, "procrastinate") in by
    ]
    if not ratios:
        return []
    ratio = median(ratios)
    return [
        {
            "target": f"PostgreSQL, lock = none, {TARGET_PROCESSES * TARGET_PER_PROCESS} workers "
            f"in {TARGET_PROCESSES} processes: >= {TARGET_VS_PROCRASTINATE_C4:.0f}x "
            "Procrastinate c=4",
            "measured": ratio,
            "value": ratio,
            "shown": f"{ratio:.2f}x",
            "met": ratio >= TARGET_VS_PROCRASTINATE_C4,
            "ratios": ratios,
            "bgtaskex_tasks_per_s": median(
                [m["tasks_per_s"] for m in ms if m["side"] == "bgtaskex"]
            ),
            "procrastinate_tasks_per_s": median(
                [m["tasks_per_s"] for m in ms if m["side"] == "procrastinate"]
            ),
        }
    ]


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    rounds: int = 1,
    grid: bool = True,
) -> dict[str, Any]:
    """The grid of worker counts and layouts (`grid`), and the target beside it."""
    workloads = [
        Workload("noop", "no-op", _ref(Noop), NOOP_QUICK if quick else NOOP_FULL),
        Workload("sleep20", "sleep 20 ms", _ref(Sleep20), SLEEP_QUICK if quick else SLEEP_FULL),
    ]
    problem = "disabled by --no-postgres" if not use_postgres else postgres_problem(postgres_url)
    if problem is not None:
        console.print(f"[yellow]workers benchmark skipped (PostgreSQL only): {problem}[/yellow]")
        return {"skipped": problem}
    versions = peers.peer_versions()
    sides = ["bgtaskex", "procrastinate"] if versions["procrastinate"] else ["bgtaskex"]
    if not versions["procrastinate"]:
        console.print("[yellow]workers: Procrastinate not installed: no target ratio[/yellow]")
    target_tasks = TARGET_QUICK if quick else TARGET_FULL

    results: list[dict[str, Any]] = []
    target_results: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-workers-") as tmp:
        home = Path(tmp)
        for r in range(rounds):
            for side in rotated(sides, r):
                one = measure_target(side, target_tasks, postgres_url, home)
                one["round"] = r
                target_results.append(one)
                console.print(
                    f"[dim]round {r + 1}/{rounds} target {side:<13} {target_tasks} tasks: "
                    f"drain {one['drain_s']:.2f}s ({one['tasks_per_s']:.0f} tasks/s), "
                    f"{one['cpu_ms_per_task']:.2f} ms CPU/task[/dim]"
                )
            if not grid:
                continue
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
    summary = _summarise(results, workloads) if grid else []
    if grid:
        _print_table(console, summary, rounds)
    elapsed = time.monotonic() - began
    result: dict[str, Any] = {
        "rounds": rounds,
        "postgres_url": masked(postgres_url),
        "worker_counts": list(WORKER_COUNTS),
        "sizes": {w.key: w.tasks for w in workloads},
        "sleep_seconds": SLEEP_SECONDS,
        "lease": LEASE,
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "target_tasks": target_tasks,
        "target_measurements": target_results,
        "summary": summary,
        "measurements": results,
    }
    result["targets"] = targets(result)
    _print_targets(console, result["targets"], target_results)
    console.print(f"[dim]workers benchmark took {elapsed:.1f}s[/dim]\n")
    result["elapsed_s"] = elapsed
    return result


def _print_targets(
    console: Console, found: list[dict[str, Any]], measured: list[dict[str, Any]]
) -> None:
    for side in ("bgtaskex", "procrastinate"):
        ms = [m for m in measured if m["side"] == side]
        if ms:
            console.print(
                f"target side {side}: {median([m['tasks_per_s'] for m in ms]):.0f} tasks/s, "
                f"{median([m['cpu_ms_per_task'] for m in ms]):.2f} ms CPU/task "
                f"(median of {len(ms)})"
            )
    if not found:
        return
    table = Table(title="Targets (workers)", title_justify="left")
    for column in ("target", "bgtaskex tasks/s", "Procr. c=4 tasks/s", "measured", "met"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for t in found:
        table.add_row(
            t["target"],
            f"{t['bgtaskex_tasks_per_s']:.0f}",
            f"{t['procrastinate_tasks_per_s']:.0f}",
            t["shown"],
            "[green]yes[/green]" if t["met"] else "[red]no[/red]",
        )
    console.print(table)


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
