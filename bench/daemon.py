"""What a daemon's run costs since each run executes in a forked child (#14's hard limit).

For each backend (SQLite FULL, PostgreSQL), on a fresh database, the daemon's way of
running one scheduled process, timed from the call to the report:

- `in-process`: the run in the daemon's own process (`runchild.InProcess`, what the
  daemon did before run children; still used where there is no `os.fork`);
- `child`: the run in a forked child (`runchild.Children`, what the daemon does): fork,
  the child's own connection, the run, its report, its exit, the wait;
- `fork only`: `os.fork()` of a child that exits at once, and the wait (the floor).

Each is measured on an idle database and with one no-op task due (enqueued before each
sample, outside the timing), rotated within each round; medians over N samples (60;
quick 20). The interactive wake-up latency is the same path plus the notification, so
the child's extra cost is also what an interactive task waits more.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import BenchError, median, quartiles, rotated
from .scratch import POSTGRES, SQLITE_FULL, Backend, postgres_problem
from .throughput import NOOP_REF, _settings, fresh_database

SAMPLES_FULL, SAMPLES_QUICK = 60, 20
KINDS = ("in-process", "child")


def _fork_only() -> float:
    began = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return time.perf_counter() - began


def measure(backend: Backend, samples: int, workdir: Path, pg_url: str) -> dict[str, Any]:
    from bgtaskex.client import connect
    from bgtaskex.processes import Process
    from bgtaskex.runchild import Children, InProcess

    runners = {"in-process": InProcess(), "child": Children()}
    process = Process(name="bench", every=60.0)
    stop = threading.Event()
    times: dict[str, list[float]] = {f"{k} {w}": [] for k in KINDS for w in ("idle", "1 task")}
    times["fork only"] = []
    with fresh_database(backend, workdir, pg_url) as target:
        client = connect(settings=_settings(backend, target))
        try:
            client.run_once()  # the schema, the first connection: out of the samples
            for i in range(samples):
                for kind in rotated(KINDS, i):
                    for work in ("idle", "1 task"):
                        if work == "1 task":
                            client.enqueue("bench-daemon", [NOOP_REF])
                        began = time.perf_counter()
                        ended = runners[kind].run(client, process, None, stop)
                        times[f"{kind} {work}"].append(time.perf_counter() - began)
                        if ended.died:
                            raise BenchError(f"{kind} run died: {ended.died}")
                times["fork only"].append(_fork_only())
            finished = sum(n for _, _, status, n in client.stats().counts if status == "finished")
            if finished != samples * len(KINDS):
                raise BenchError(f"{finished} of {samples * len(KINDS)} tasks finished")
        finally:
            client.close()
    return {
        k: {"median_ms": median(v) * 1e3, "quartiles_ms": [q * 1e3 for q in quartiles(v)]}
        for k, v in times.items()
    }


def run(console: Console, *, quick: bool, postgres_url: str, use_postgres: bool) -> dict[str, Any]:
    samples = SAMPLES_QUICK if quick else SAMPLES_FULL
    backends = [SQLITE_FULL]
    skipped = None
    if use_postgres:
        skipped = postgres_problem(postgres_url)
        if skipped is None:
            backends.append(POSTGRES)
        else:
            console.print(f"PostgreSQL skipped: {skipped}")
    results: dict[str, Any] = {"samples": samples, "postgres_skipped": skipped}
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-daemon-") as tmp:
        for backend in backends:
            results[backend.key] = measure(backend, samples, Path(tmp), postgres_url)
    table = Table(title=f"A daemon's run, from the call to the report (median of {samples})")
    for column in (
        "backend",
        "work",
        "in-process ms",
        "child ms",
        "child - in-process",
        "child / in-process",
        "fork only ms",
    ):
        table.add_column(column, justify="left" if column in ("backend", "work") else "right")
    for backend in backends:
        r = results[backend.key]
        for work in ("idle", "1 task"):
            inside, child = r[f"in-process {work}"]["median_ms"], r[f"child {work}"]["median_ms"]
            table.add_row(
                backend.label,
                work,
                f"{inside:.1f}",
                f"{child:.1f}",
                f"{child - inside:+.1f}",
                f"{child / inside:.2f}x",
                f"{r['fork only']['median_ms']:.1f}",
            )
    console.print(table)
    return results
