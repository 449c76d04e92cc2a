"""Throughput and latency against the size of the queue, with a plot.

For each queue size (100, 1,000, 10,000; quick: 100, 1,000) and backend (SQLite FULL,
PostgreSQL), on a fresh database (a new file; a scratch PostgreSQL database): enqueue
that many single-action tasks (untimed, with durability off: `synchronous=OFF` /
`synchronous_commit=off`, to save time), then ONE in-process run,
`client.run_once(max_execution_time=3600)` on a client at the normal durability. The
action, `bench.queuesize:Stamp`, is a no-op that notes when the first `execute` of the
run is called. Reported: tasks/s of the drain, and the time from the `run_once` call to
the first task's `execute` (lock, run set-up, first next-task query; the interpreter's
start-up is the start-up benchmark's business). One untimed warm-up drain of 10 tasks per
backend first; then the sizes, in a rotated order per backend, backends alternating.

With matplotlib installed, a PNG of both against the queue size (log x) is written next to
the JSON result file (`<result>-queuesize.png`).
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bgtaskex import Action

from . import BenchError, rotated
from .peers import _bgtaskex_client, bgtaskex_target, fill
from .scratch import POSTGRES, SQLITE_FULL, Backend, postgres_problem

SIZES_FULL = (100, 1_000, 10_000)
SIZES_QUICK = (100, 1_000)


class Stamp(Action):
    """A no-op that notes the time of the first execute since `first` was reset."""

    description = "benchmark no-op, stamps its first call"
    first: ClassVar[list[float]] = []

    def execute(self, deadline: float) -> bool:
        if not Stamp.first:
            Stamp.first.append(time.perf_counter())
        return True


REF = f"{Stamp.__module__}:{Stamp.__qualname__}"


def measure(backend: Backend, size: int, workdir: Path, pg_url: str) -> dict[str, Any]:
    with bgtaskex_target(backend.kind, workdir, pg_url) as target:
        fill(target, size, [REF])
        client = _bgtaskex_client(target.url, target.lock, backend.synchronous)
        try:
            Stamp.first.clear()
            gc.collect()
            began = time.perf_counter()
            summary = client.run_once(max_execution_time=3600.0)
            drain_s = time.perf_counter() - began
        finally:
            client.close()
    if summary.finished != size or not Stamp.first:
        raise BenchError(f"queue size {size} {backend.label}: {summary.line()}")
    return {
        "backend": backend.key,
        "size": size,
        "drain_s": drain_s,
        "tasks_per_s": size / drain_s,
        "first_start_ms": (Stamp.first[0] - began) * 1000,
    }


def plot(rows: list[dict[str, Any]], backends: list[Backend], path: Path) -> str | None:
    """Write the PNG; None if written, else why not."""
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed (pip install -e '.[bench]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in backends:
        rs = sorted((r for r in rows if r["backend"] == backend.key), key=lambda r: r["size"])
        sizes = [r["size"] for r in rs]
        left.plot(sizes, [r["tasks_per_s"] for r in rs], marker="o", label=backend.label)
        right.plot(sizes, [r["first_start_ms"] for r in rs], marker="o", label=backend.label)
    for ax, ylabel, title in (
        (left, "tasks/s", "Drain throughput (one run-once, in-process)"),
        (right, "ms", "Time from run_once() to the first task's execute"),
    ):
        ax.set_xscale("log")
        sizes = sorted({r["size"] for r in rows})
        ax.set_xticks(sizes, [f"{size:,}" for size in sizes])
        ax.minorticks_off()
        ax.set_xlabel("tasks queued")
        ax.set_ylabel(ylabel)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("bgtaskex against queue size: no-op single-action tasks", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    png_path: Path | None = None,
) -> dict[str, Any]:
    sizes = SIZES_QUICK if quick else SIZES_FULL
    backends = [SQLITE_FULL]
    skipped = postgres_problem(postgres_url) if use_postgres else "disabled by --no-postgres"
    if skipped is None:
        backends.append(POSTGRES)
    else:
        console.print(f"[yellow]queue size: PostgreSQL skipped: {skipped}[/yellow]")
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-queuesize-") as tmp:
        for backend in backends:  # warm-up: imports, first connections, statement caches
            measure(backend, 10, Path(tmp), postgres_url)
        orders = {b.key: rotated(list(sizes), i) for i, b in enumerate(backends)}
        for step in range(len(sizes)):
            for backend in backends:
                size = orders[backend.key][step]
                one = measure(backend, size, Path(tmp), postgres_url)
                rows.append(one)
                console.print(
                    f"[dim]queue size {size:>6} {backend.label:<11}: {one['tasks_per_s']:.0f} "
                    f"tasks/s, first task after {one['first_start_ms']:.1f} ms[/dim]"
                )
    elapsed = time.monotonic() - began
    table = Table(
        title="Against queue size: one in-process run-once draining N no-op tasks",
        title_justify="left",
    )
    columns = ("backend", "tasks queued", "tasks/s", "first task starts after ms")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for backend in backends:
        mine = [r for r in rows if r["backend"] == backend.key]
        for row in sorted(mine, key=lambda r: r["size"]):
            table.add_row(
                backend.label,
                str(row["size"]),
                f"{row['tasks_per_s']:.0f}",
                f"{row['first_start_ms']:.1f}",
            )
    console.print(table)
    plotted = None
    why_not = "no output path"
    if png_path is not None:
        why_not = plot(rows, backends, png_path)
        if why_not is None:
            plotted = str(png_path)
            console.print(f"plot written to {png_path}")
    if plotted is None:
        console.print(f"[yellow]queue size: no plot: {escape(str(why_not))}[/yellow]")
    console.print(f"[dim]queue size benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "sizes": list(sizes),
        "postgres_skipped": skipped,
        "elapsed_s": elapsed,
        "plot": plotted,
        "plot_skipped": None if plotted else why_not,
        "measurements": rows,
    }
