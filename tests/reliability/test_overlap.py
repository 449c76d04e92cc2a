"""Overlapping cron: many `bgtaskex run-once` started at 20 per second against one
database, while runs with a 1 s budget execute JournalActions that journal their
enter/exit with their pid.

What must hold (printed, and in the assertion messages):

* mutual exclusion: never more than one process inside an action: the enter/exit
  intervals of executes never overlap, across pids (journal order, J2 of invariants.py);
* every process exits 0; each either took the lock (its summary line) or printed the one
  "another run (pid P ...) holds the lock ...; nothing done" line, naming a run that did
  take it, and wrote nothing on stderr;
* a run that found the lock held costs under 3 s of CPU: its imports, no work (its own user + system
  time, from wait4: on 2 cores, 20 starts per second queue up for the CPU, so their wall
  times are printed, not asserted);
* only lock holders write: every event's run id, every task's last_run_id and every
  journal line come from runs that took the lock;
* every invariant of invariants.py (no kill here: no redo, no unit done twice).

Sizes: quick 100 processes, long 1,000. They are started on a 20/s schedule, but at most
MAX_ALIVE (16) are alive at once: the first 16 start within 0.8 s, then a new one starts
as soon as one ends. A run that finds the lock held costs about 0.6 s of CPU (it imports
the runner and SQLAlchemy and checks the schema before it tries the lock), so 2 cores
finish about 3 of them per second: letting all of them pile up (1,000 Python processes)
would only starve the lock holder and exhaust memory. The achieved rate is printed.
"""

from __future__ import annotations

import re
import statistics
import time

import pytest

from tests.reliability import scaled
from tests.reliability.conftest import Run, Torture, wait_for_any

PROCESSES = scaled(100, 1000)
RATE = 20.0  # starts per second
MAX_ALIVE = 16
BUDGET = 1  # --max-execution-time of each run, seconds
BUSY = re.compile(r"^another run(?: \(pid (?P<pid>\d+)[^)]*\))? holds the lock .*; nothing done$")

pytestmark = pytest.mark.timeout(scaled(240, 3600))


@pytest.mark.xdist_group("torture")
def test_overlapping_runs_exclude_each_other(torture: Torture, size: str) -> None:
    # Short tasks first (each run goes through several actions), then one endless task,
    # so that the work never runs out while processes are still being started.
    short = scaled(40, 400)
    workload = [
        [torture.params(f"s{t:03d}.a{r}", units=8, unit_ms=10) for r in range(1, 4)]
        for t in range(short)
    ]
    workload.append([torture.params("endless", units=10**9, unit_ms=10)])
    torture.enqueue(workload)

    began = time.monotonic()
    alive: list[Run] = []
    for i in range(PROCESSES):
        due = began + i / RATE
        while True:  # reap what ended while waiting for the next start (and for room)
            alive = [r for r in alive if not r.poll()]
            wait = due - time.monotonic()
            if wait <= 0 and len(alive) < MAX_ALIVE:
                break
            wait_for_any(alive, wait if wait > 0 else 1.0)
        alive.append(torture.start_run_once("--max-execution-time", BUDGET))
    spawned = time.monotonic() - began
    for run in alive:
        run.wait(timeout=300)
    elapsed = time.monotonic() - began
    runs = torture.runs

    holders: dict[str, Run] = {}  # run id -> run
    busy: list[tuple[Run, int | None]] = []
    odd: list[str] = []
    for run in runs:
        summary = run.summary()
        lines = run.stdout.splitlines()
        match = BUSY.match(lines[0]) if len(lines) == 1 else None
        if run.returncode != 0 or run.stderr.strip():
            odd.append(run.describe())
        elif summary is not None:
            holders[summary["run_id"]] = run
        elif match is not None:
            busy.append((run, int(match["pid"]) if match["pid"] else None))
        else:
            odd.append(run.describe())
    holder_pids = {run.pid for run in holders.values()}

    report = torture.check()
    entries = [e for e in _journal(torture)]
    writers = {e["pid"] for e in entries}
    tasks, _actions, events = _db(torture)
    event_runs = {e["run_id"] for e in events} - {None}
    task_runs = {t["last_run_id"] for t in tasks} - {None}
    named = [pid for _run, pid in busy if pid is not None]
    cpu = [run.cpu or 0.0 for run, _pid in busy]
    wall = [run.wall for run, _pid in busy]
    executes = report.journal.get("enter", 0)
    counts = (
        f"size {size}: {len(runs)} processes started in {spawned:.1f}s "
        f"({len(runs) / spawned:.1f}/s, at most {MAX_ALIVE} alive), all ended in "
        f"{elapsed:.1f}s; {len(holders)} took the lock, {len(busy)} found it held "
        f"({len(named)} named the holder), {len(odd)} other; {executes} executes by "
        f"{len(writers)} pids, none overlapping; busy runs: CPU max "
        f"{max(cpu, default=0):.2f}s median {statistics.median(cpu or [0]):.2f}s, wall "
        f"median {statistics.median(wall or [0]):.2f}s max {max(wall, default=0):.2f}s; "
        f"event run ids {len(event_runs)}, task last_run_ids {len(task_runs)}; "
        f"{report.summary()}"
    )
    print(f"\noverlap invariant: one process inside an action at a time; {counts}")
    assert not odd, f"{counts}\n" + "\n".join(odd[:5])
    assert len(holders) + len(busy) == PROCESSES, counts
    assert len(holders) >= 2 and busy, f"the lock never changed hands: {counts}"
    assert writers <= holder_pids, f"journal lines from pids {writers - holder_pids}: {counts}"
    assert executes > 0, counts
    assert set(named) <= holder_pids, f"busy runs named {set(named) - holder_pids}: {counts}"
    assert event_runs <= set(holders), f"events by runs {event_runs - set(holders)}: {counts}"
    assert task_runs <= set(holders), f"tasks written by {task_runs - set(holders)}: {counts}"
    # A busy run imports the runner and SQLAlchemy (0.6-1.1 s of CPU on a 2-core CI
    # machine, by its speed that day), then finds the lock held: 3 s would be work.
    slow = [round(c, 2) for c in cpu if c >= 3.0]
    assert not slow, f"busy runs that took 3 s of CPU or more: {slow}; {counts}"


def _journal(torture: Torture) -> list[dict[str, object]]:
    from tests.reliability.invariants import read_journal

    return read_journal(torture.journal)[0]


def _db(torture: Torture) -> tuple[list[dict[str, object]], ...]:
    from tests.reliability.invariants import read_db

    return read_db(torture.db)
