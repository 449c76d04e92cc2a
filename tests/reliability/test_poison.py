"""Poison actions: an action that raises on every execute, and one that SIGKILLs its own
process on every execute, among healthy tasks; real `bgtaskex run-once` subprocesses,
max_attempts = 4 (BGTASKEX_MAX_ATTEMPTS, not the default 5, so the setting is seen).

What must hold (printed, and in the assertion messages; attempts are counted from the
journal, where each execute writes "enter" and each recovery "change"):

* the poison's execute is tried exactly max_attempts times (4 "enter" lines, 3
  "change" lines between them), then the action fails, with attempts = 4 and the
  reason in its history; no further hook is called;
* the chain goes on: the healthy action after the poison in its task is done, and the
  task ends failed;
* the healthy tasks queued before and after it all finish: a raising poison does not
  even stop the run it raises in (they finish in the first run); a killing poison takes
  its run down each time, so the tasks after it wait until it has failed;
* every invariant of invariants.py, at the end (final).
"""

from __future__ import annotations

import itertools
import random
import time
from typing import Any

import pytest

from tests.reliability import timed
from tests.reliability.conftest import Run, Torture
from tests.reliability.invariants import Report

MAX_ATTEMPTS = 4

pytestmark = pytest.mark.timeout(120)


def workload(torture: Torture, mode: str) -> dict[str, list[str]]:
    """Healthy tasks before and after a task [poison, healthy]; {task name: labels}."""
    layout = {
        "before": ["before.a1", "before.a2"],
        "poison": ["poison.a1", "poison.a2"],
        "after1": ["after1.a1", "after1.a2"],
        "after2": ["after2.a1"],
    }
    tasks = [
        [
            torture.params(lbl, units=3, unit_ms=2, mode=mode if lbl == "poison.a1" else "work")
            for lbl in labels
        ]
        for labels in layout.values()
    ]
    torture.enqueue(tasks, names=list(layout))
    torture.env["BGTASKEX_MAX_ATTEMPTS"] = str(MAX_ATTEMPTS)
    return layout


def drain(torture: Torture, limit: int = 12) -> list[Run]:
    """run-once until no task is left to run (at most `limit` runs)."""
    runs: list[Run] = []
    for _ in range(limit):
        report = torture.check(killed_pids=killed(runs))
        if not set(report.tasks) - {"finished", "failed", "cancelled"}:
            return runs
        runs.append(torture.run_once("--max-execution-time", 30))
    pytest.fail(f"work left after {limit} runs: {torture.check().summary()}")


def killed(runs: list[Run]) -> set[int]:
    return {r.pid for r in runs if r.returncode == -9}


def task_status(report: Report, labels: list[str]) -> str:
    return str(report.task_rows[report.rows[labels[0]]["task_id"]]["status"])


def history(torture: Torture, report: Report, label: str) -> list[str]:
    from tests.reliability.invariants import read_db

    row = report.rows[label]
    return [
        e["message"]
        for e in read_db(torture.db)[2]
        if e["task_id"] == row["task_id"] and e["rank"] == row["rank"]
    ]


def common_checks(
    torture: Torture, layout: dict[str, list[str]], report: Report, counts: str
) -> None:
    poison = report.rows["poison.a1"]
    lines = report.by_label["poison.a1"]
    assert lines["enter"] == MAX_ATTEMPTS, counts
    assert lines["change"] == MAX_ATTEMPTS - 1, counts
    assert (poison["status"], poison["attempts"]) == ("failed", MAX_ATTEMPTS), counts
    assert any(
        f"execute died {MAX_ATTEMPTS} times (max_attempts={MAX_ATTEMPTS})" in m
        for m in history(torture, report, "poison.a1")
    ), counts
    assert report.rows["poison.a2"]["status"] == "done", counts
    assert task_status(report, layout["poison"]) == "failed", counts
    for name in ("before", "after1", "after2"):
        assert task_status(report, layout[name]) == "finished", f"{name}: {counts}"
    healthy = [lbl for labels in layout.values() for lbl in labels if lbl != "poison.a1"]
    assert all(report.rows[lbl]["status"] == "done" for lbl in healthy), counts
    assert all(report.by_label[lbl]["done"] == 1 for lbl in healthy), counts


def describe(report: Report, runs: list[Run], began: float, extra: str = "") -> str:
    lines = report.by_label["poison.a1"]
    row: dict[str, Any] = report.rows["poison.a1"]
    exits = [r.returncode for r in runs]
    return (
        f"{len(runs)} runs (exit codes {exits}) in {time.monotonic() - began:.1f}s; poison: "
        f"{lines['enter']} executes, {lines['change']} recoveries, status {row['status']}, "
        f"attempts {row['attempts']}; {extra}{report.summary()}"
    )


def test_raising_poison_fails_after_max_attempts(torture: Torture) -> None:
    layout = workload(torture, "raise")
    began = time.monotonic()
    first = torture.run_once("--max-execution-time", 30)
    after_first = torture.check()
    runs = [first, *drain(torture)]
    report = torture.check(final=True)
    first_done = sorted(
        name for name, labels in layout.items() if task_status(after_first, labels) == "finished"
    )
    counts = describe(report, runs, began, f"finished by the first run: {first_done}; ")
    print(
        f"\npoison (raises) invariant: tried exactly {MAX_ATTEMPTS} times, others finish; {counts}"
    )
    assert all(r.returncode == 0 and r.summary() is not None for r in runs), "\n".join(
        r.describe() for r in runs
    )
    assert "raised RuntimeError" in first.stderr, first.describe()
    assert first_done == ["after1", "after2", "before"], counts
    assert len(runs) == MAX_ATTEMPTS + 1, counts
    assert report.by_label["poison.a1"]["exit"] == MAX_ATTEMPTS, counts
    common_checks(torture, layout, report, counts)


def test_self_killing_poison_fails_after_max_attempts(torture: Torture) -> None:
    layout = workload(torture, "kill")
    began = time.monotonic()
    runs = drain(torture)
    report = torture.check(killed_pids=killed(runs), final=True)
    counts = describe(report, runs, began, f"runs killed by the poison {len(killed(runs))}; ")
    print(
        f"\npoison (kill -9 itself) invariant: tried exactly {MAX_ATTEMPTS} times, "
        f"others finish; {counts}"
    )
    codes = [r.returncode for r in runs]
    assert codes == [-9] * MAX_ATTEMPTS + [0], counts + "\n" + runs[-1].describe()
    assert runs[-1].summary() is not None, runs[-1].describe()
    assert report.by_label["poison.a1"]["exit"] == 0, counts
    # Each killed run got as far as the poison and no further: "before" finished in the
    # first one, the tasks after it only in the last run.
    assert report.by_label["before.a2"]["done"] == 1, counts
    after_pids = {e_pid for lbl in ("after1.a1", "after2.a1") for e_pid in _pids(torture, lbl)}
    assert after_pids == {runs[-1].pid}, f"tasks after the poison ran in {after_pids}: {counts}"
    common_checks(torture, layout, report, counts)


def _pids(torture: Torture, label: str) -> set[int]:
    from tests.reliability.invariants import read_journal

    return {e["pid"] for e in read_journal(torture.journal)[0] if e["label"] == label}


@pytest.mark.parametrize("mode", ["raise", "kill"])
def test_poison_with_backoff_waits_longer_each_time(torture: Torture, mode: str) -> None:
    """With the retry backoff on (timed.RETRY_DELAY doubled up to MAX_RETRY_DELAY) and
    delayed, snoozing and unique-keyed tasks queued around it, the poison is still tried
    exactly max_attempts times, each execute no sooner than its delay after the death
    before (0.9 x retry_delay x 2^(death - 1), capped: the jitter's low end), and every
    invariant holds, J8 (nothing entered before it is due) and K1 included. A killing
    poison's next execute comes a run after the one that counted its death (under a
    second): its delays are longer, so that one taken too early would be seen."""
    delay, cap = (timed.RETRY_DELAY, timed.MAX_RETRY_DELAY) if mode == "raise" else (1.0, 2.0)
    timed.backoff(torture, delay, cap)
    layout = workload(torture, mode)
    mixed = timed.mixed(torture, 6, random.Random(mode), most=1.0)
    began = time.monotonic()
    runs = timed.drain(torture, "--max-execution-time", 30, within=90)
    report = torture.check(killed_pids=killed(runs), final=True)
    enters = report.enters["poison.a1"]
    gaps = [later - earlier for earlier, later in itertools.pairwise(enters)]
    least = [0.9 * min(delay * 2**death, cap) - 0.1 for death in range(len(gaps))]
    counts = describe(
        report, runs, began, f"gaps between the poison's executes {[round(g, 2) for g in gaps]}; "
    )
    print(f"\npoison ({mode}) with backoff invariant: each retry after its delay; {counts}")
    assert all(r.returncode in (0, -9) for r in runs), "\n".join(r.describe() for r in runs)
    assert all(gap >= low for gap, low in zip(gaps, least, strict=True)), f"{least}: {counts}"
    common_checks(torture, layout, report, counts)
    labels = [lbl for kind in mixed.values() for lbl in kind]
    assert all(report.rows[lbl]["status"] == "done" for lbl in labels), counts
    assert report.by_label[mixed["snoozing"][0]]["enter"] >= 2, counts  # snoozed, then ran
