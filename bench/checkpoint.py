"""Cost of `self.checkpoint()`: an action saves its params after each of N tiny chunks.

One task of one action, `bench.checkpoint:Chunked`, whose `execute` runs N chunks (10,000;
quick 2,000); a chunk bumps a counter in `self.params` and calls `self.checkpoint()`. The
action times its own loop (`time.perf_counter`), so the figure is the checkpoints alone:
no enqueue, no run start-up. Backends: SQLite FULL (the default), SQLite NORMAL (no
fsync per commit: what is left is bgtaskex's own CPU per checkpoint) and PostgreSQL,
rotated in each repetition. Beside each, the physical bound: one single-row UPDATE +
COMMIT with the bare driver (median of samples before and after), as ms per commit.
"""

from __future__ import annotations

import gc
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.table import Table

from bgtaskex import Action

from . import BenchError, median, quartiles, rotated
from .scratch import POSTGRES, SQLITE_FULL, SQLITE_NORMAL, Backend, postgres_problem
from .throughput import Counter, fresh_database

CHUNKS_FULL, CHUNKS_QUICK = 10_000, 2_000
REPEATS_FULL, REPEATS_QUICK = 2, 2
RAW_SECONDS_FULL, RAW_SECONDS_QUICK = 1.0, 0.5


class Chunked(Action):
    """`params["chunks"]` tiny chunks, each followed by `self.checkpoint()`."""

    description = "benchmark: a checkpoint per chunk"
    loops: ClassVar[list[float]] = []  # seconds of each execute's loop, read by the benchmark

    def execute(self, deadline: float) -> bool:
        n = int(self.params["chunks"])
        began = time.perf_counter()
        for i in range(n):
            self.params["done"] = i + 1
            self.checkpoint()
        Chunked.loops.append(time.perf_counter() - began)
        return True


REF = f"{Chunked.__module__}:{Chunked.__qualname__}"


def measure(
    backend: Backend, chunks: int, workdir: Path, pg_url: str, raw_seconds: float
) -> dict[str, Any]:
    from bgtaskex.client import connect
    from bgtaskex.config import Settings

    with fresh_database(backend, workdir, pg_url) as target:
        client = connect(
            settings=Settings(
                database_url=target.url,
                lock_file=str(target.lock_file),
                max_execution_time=3600.0,
                sqlite_synchronous=backend.synchronous,
            )
        )
        try:
            tid = client.enqueue("bench-checkpoint", [(REF, {"chunks": chunks})])
            counter = Counter(client.store._engine)
            samples = [target.raw_commits_per_s(raw_seconds)]
            Chunked.loops.clear()
            gc.collect()
            counter.take()
            summary = client.run_once(max_execution_time=3600.0)
            counts = counter.take()
            samples.append(target.raw_commits_per_s(raw_seconds))
            done = client.get(tid).actions[0].params.get("done")
        finally:
            client.close()
    if summary.finished != 1 or len(Chunked.loops) != 1 or done != chunks:
        raise BenchError(f"checkpoint {backend.label}: {summary.line()}, done={done}")
    loop_s = Chunked.loops[0]
    raw = median(samples)
    return {
        "backend": backend.key,
        "chunks": chunks,
        "loop_s": loop_s,
        "ms_per_checkpoint": loop_s * 1000 / chunks,
        # the run's commits minus the task's own (running, done+finished): the checkpoints'
        "write_commits_per_checkpoint": (counts["write_commits"] - 2) / chunks,
        "statements_per_checkpoint": counts["statements"] / chunks,
        "raw_commits_per_s": samples,
        "raw_ms_per_commit": 1000 / raw,
        "ratio_to_raw_commit": (loop_s * 1000 / chunks) / (1000 / raw),
    }


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    chunks: int | None = None,
) -> dict[str, Any]:
    n = chunks or (CHUNKS_QUICK if quick else CHUNKS_FULL)
    repeats = REPEATS_QUICK if quick else REPEATS_FULL
    raw_seconds = RAW_SECONDS_QUICK if quick else RAW_SECONDS_FULL
    backends = [
        SQLITE_FULL,
        SQLITE_NORMAL,
    ]
    skipped = postgres_problem(postgres_url) if use_postgres else "disabled by --no-postgres"
    if skipped is None:
        backends.append(POSTGRES)
    else:
        console.print(f"[yellow]checkpoint: PostgreSQL skipped: {skipped}[/yellow]")

    results = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-checkpoint-") as tmp:
        for r in range(repeats):
            for backend in rotated(backends, r):
                one = measure(backend, n, Path(tmp), postgres_url, raw_seconds)
                one["round"] = r
                results.append(one)
                console.print(
                    f"[dim]checkpoint {r + 1}/{repeats} {backend.label:<13}: "
                    f"{one['ms_per_checkpoint']:.3f} ms/checkpoint, raw commit "
                    f"{one['raw_ms_per_commit']:.3f} ms[/dim]"
                )
    elapsed = time.monotonic() - began
    rows = []
    table = Table(
        title=f"Checkpoint cost: {n} chunks, self.checkpoint() after each, one action "
        f"(median of {repeats} alternating repetitions)",
        title_justify="left",
    )
    for i, column in enumerate(
        (
            "backend",
            "ms/checkpoint",
            "p25-p75",
            "checkpoints/s",
            "write commits/checkpoint",
            "stmts/checkpoint",
            "raw UPDATE+COMMIT ms",
            "x raw commit",
        )
    ):
        table.add_column(column, justify="left" if i == 0 else "right")
    for backend in backends:
        ms = [m for m in results if m["backend"] == backend.key]
        per = [m["ms_per_checkpoint"] for m in ms]
        lo, hi = quartiles(per)
        row = {
            "backend": backend.key,
            "label": backend.label,
            "ms_per_checkpoint": median(per),
            "ms_p25": lo,
            "ms_p75": hi,
            "write_commits_per_checkpoint": median([m["write_commits_per_checkpoint"] for m in ms]),
            "statements_per_checkpoint": median([m["statements_per_checkpoint"] for m in ms]),
            "raw_ms_per_commit": median([m["raw_ms_per_commit"] for m in ms]),
            "ratio_to_raw_commit": median([m["ratio_to_raw_commit"] for m in ms]),
        }
        rows.append(row)
        table.add_row(
            backend.label,
            f"{row['ms_per_checkpoint']:.3f}",
            f"{lo:.3f}-{hi:.3f}",
            f"{1000 / row['ms_per_checkpoint']:.0f}",
            f"{row['write_commits_per_checkpoint']:.2f}",
            f"{row['statements_per_checkpoint']:.1f}",
            f"{row['raw_ms_per_commit']:.3f}",
            f"{row['ratio_to_raw_commit']:.2f}",
        )
    console.print(table)
    console.print(
        "[dim]x raw commit: time per checkpoint over one bare-driver single-row UPDATE+COMMIT "
        "at the same durability, per repetition; the SQLite NORMAL row is mostly bgtaskex's "
        "own CPU.[/dim]"
    )
    console.print(f"[dim]checkpoint benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "chunks": n,
        "repeats": repeats,
        "postgres_skipped": skipped,
        "elapsed_s": elapsed,
        "summary": rows,
        "measurements": results,
    }
