"""A long chain in one run: a task of 100,000 no-op actions (quick: 20,000) on SQLite.

One in-process run with a budget long enough for the whole chain, on a fresh SQLite file
(FULL). Reported: actions/s over the run, and the resident memory of the process when
the run had done 1% of the chain against when it was done (the runner processes a chain
as a loop: its memory must not grow with the actions done; the task's own rows, loaded
once, are in both). Also checked: every action ran exactly once, in one run.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console
from rich.table import Table

from bgtaskex import Action

from . import BenchError

CHAIN_FULL, CHAIN_QUICK = 100_000, 20_000


def _rss() -> int:
    with open("/proc/self/statm", encoding="ascii") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Step(Action):
    """A no-op that counts its calls and samples the process's memory at two points."""

    calls: ClassVar[list[int]] = []
    samples: ClassVar[dict[str, int]] = {}

    def execute(self, deadline: float) -> bool:
        n = int(self.params["n"])
        Step.calls.append(n)
        if n == int(self.params["early"]):
            Step.samples["early"] = _rss()
        if n == int(self.params["last"]):
            Step.samples["last"] = _rss()
        return True


REF = f"{Step.__module__}:{Step.__qualname__}"


def measure(size: int, workdir: Path) -> dict[str, Any]:
    import bgtaskex

    url = f"sqlite:///{workdir / 'chain.db'}"
    client = bgtaskex.connect(url)
    try:
        early = size // 100
        actions = [(REF, {"n": n, "early": early, "last": size - 1}) for n in range(size)]
        started = time.perf_counter()
        task_id = client.enqueue("chain", actions)
        enqueued = time.perf_counter() - started
        Step.calls.clear()
        Step.samples.clear()
        started = time.perf_counter()
        summary = client.run_once(max_execution_time=3600)
        elapsed = time.perf_counter() - started
        status = client.get(task_id).status
    finally:
        client.close()
    if Step.calls != list(range(size)) or status != "finished" or summary.actions != size:
        raise BenchError(f"chain of {size}: not every action ran once in one run ({status})")
    return {
        "actions": size,
        "enqueue_s": enqueued,
        "run_s": elapsed,
        "actions_per_s": size / elapsed,
        "rss_early_mb": Step.samples["early"] / 2**20,
        "rss_last_mb": Step.samples["last"] / 2**20,
        "rss_growth": Step.samples["last"] / Step.samples["early"],
    }


def run(console: Console, *, quick: bool) -> dict[str, Any]:
    size = CHAIN_QUICK if quick else CHAIN_FULL
    console.rule(f"chain: one task of {size:,} actions, one run (SQLite FULL)")
    with tempfile.TemporaryDirectory(prefix="bgtaskex-chain-") as tmp:
        result = measure(size, Path(tmp))
    table = Table("actions", "enqueue", "run", "actions/s", "RSS at 1%", "RSS at end", "end/1%")
    table.add_row(
        f"{size:,}",
        f"{result['enqueue_s']:.1f}s",
        f"{result['run_s']:.1f}s",
        f"{result['actions_per_s']:,.0f}",
        f"{result['rss_early_mb']:.0f} MB",
        f"{result['rss_last_mb']:.0f} MB",
        f"{result['rss_growth']:.2f}x",
    )
    console.print(table)
    return result
