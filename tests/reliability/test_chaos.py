"""kill -9 chaos: `bgtaskex run-once` SIGKILLed at random instants, again and again, while
it works through 50 tasks of 5 JournalActions on an SQLite file; then clean runs finish.

What must hold (printed, and in the assertion messages):

* after every kill, every invariant of invariants.py, mid-way: in particular at most one
  "done" journal line per action and exactly one for each action that is done; a "done"
  line for an action not done only for the action the killed run was in;
* at most one task is in a hook (starting/running/recovering) at any time, and each run
  adds a death (attempts + 1) to at most one action: the one the previous run was
  killed in (a kill re-runs at most the action that was running);
* work is kept: a unit is done twice only after a kill in it (redone units <= kills);
* at the end, after clean runs: 0 lost (all 250 actions done, each with exactly one
  "done" line and all its units), 0 stuck (every task finished, `bgtaskex check` OK).

By design (docs/semantics.md#at-least-once), a kill that lands while the task is
`recovering` (in change_params_on_error, between two commits a millisecond apart) makes the
next run fail that action. Such actions are counted, and retried with `bgtaskex retry` before
the end; any other failure fails the test.

Where the kills land: 20% at a random delay after the process starts (5-400 ms: mostly
during start-up, before the lock); 80% at a random delay after the run took the lock
(the lock file names its pid): a third of those within 4 ms (inside the first commits:
the recovery of the previous victim), the rest 4-400 ms. The seed is printed; set
BGTASKEX_TORTURE_SEED to replay a sequence of delays (the timing itself is not
reproducible).
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter

import pytest

from tests.reliability import scaled, timed
from tests.reliability.conftest import Run, Torture
from tests.reliability.invariants import Report, read_db, read_journal

TASKS, ACTIONS = 50, 5
UNITS, UNIT_MS = scaled((8, 4.0), (40, 8.0))  # ~11 s (quick) or ~90 s (long) of work
KILLS = scaled(40, 500)
#: With time on (backoff, delayed, snoozing and unique-keyed tasks): fewer kills.
TIMED_KILLS, TIMED_TASKS = scaled(16, 200), scaled(9, 30)
SEED = int(os.environ.get("BGTASKEX_TORTURE_SEED", "20240917"))
IN_HOOK = {"starting", "running", "recovering"}

pytestmark = pytest.mark.timeout(scaled(240, 3600))


def label(task: int, rank: int) -> str:
    return f"t{task:02d}.a{rank}"


def in_hook(report: Report) -> dict[int, str]:
    """{task id: label of its current action} for the tasks left inside a hook."""
    found = {}
    for tid, task in report.task_rows.items():
        if task["status"] in IN_HOOK:
            found[tid] = next(
                lbl
                for lbl, row in report.rows.items()
                if row["task_id"] == tid and row["rank"] == task["current_rank"]
            )
    return found


def attempts(report: Report) -> dict[str, int]:
    return {lbl: row["attempts"] for lbl, row in report.rows.items()}


def wait_for_lock(bench: Torture, run: Run, timeout: float = 30.0) -> bool:
    """Wait until `run` holds the lock (True) or has exited (False)."""
    give_up = time.monotonic() + timeout
    while bench.lock_holder() != run.pid:
        if run.poll():
            return False
        if time.monotonic() > give_up:
            pytest.fail(f"run {run.pid} did not take the lock within {timeout}s")
        time.sleep(0.001)  # polling the lock file: the condition itself
    return True


@pytest.mark.xdist_group("torture")
@pytest.mark.parametrize("time_on", [False, True], ids=["plain", "backoff"])
def test_kill9_chaos(torture: Torture, size: str, time_on: bool) -> None:
    """With `time_on`: the retry backoff on (a killed execute waits its delay), and
    delayed, snoozing and unique-keyed tasks among the others (timed.py), fewer kills;
    J8 (nothing entered before it is due) and K1 are checked after every kill too."""
    rng = random.Random(SEED)
    torture.env["BGTASKEX_MAX_ATTEMPTS"] = "100000"  # this test is about kills, not limits
    torture.enqueue(
        [
            [torture.params(label(t, r), units=UNITS, unit_ms=UNIT_MS) for r in range(1, 6)]
            for t in range(TASKS)
        ]
    )
    kills, total_tasks, total_actions = KILLS, TASKS, TASKS * ACTIONS
    if time_on:
        timed.backoff(torture)
        mixed = timed.mixed(torture, TIMED_TASKS, rng, units=UNITS, unit_ms=UNIT_MS)
        kills, total_tasks = TIMED_KILLS, TASKS + TIMED_TASKS
        total_actions += sum(len(labels) for labels in mixed.values())
    began = time.monotonic()
    killed: set[int] = set()
    landed: Counter[str] = Counter()  # where the kills landed
    runs = exits = 0
    report = torture.check()
    max_in_hook = 0
    deaths_seen = 0

    while len(killed) < kills:
        if report.tasks.get("finished", 0) + report.tasks.get("failed", 0) == total_tasks:
            break  # the work ran out before the kills did (asserted below)
        before = report
        victim_before = in_hook(before)
        run = torture.start_run_once("--max-execution-time", 2)
        runs += 1
        anchor = "spawn" if rng.random() < 0.2 else "lock"
        if anchor == "spawn":
            delay = rng.uniform(0.005, 0.4)
            started = True
        else:
            delay = rng.uniform(0.0, 0.004) if rng.random() < 1 / 3 else rng.uniform(0.004, 0.4)
            started = wait_for_lock(torture, run)
        if started:
            time.sleep(delay)  # the random instant of the kill: chaos, not a wait
        was_killed = run.kill()
        if was_killed:
            killed.add(run.pid)
            assert run.returncode == -signal.SIGKILL, run.describe()
        else:
            exits += 1
            idle = time_on and timed.next_due(run) is not None  # all left waits its delay
            assert run.returncode == 0 and (idle or run.summary()), run.describe()
        assert "Traceback" not in run.stderr and "error" not in run.stderr.lower(), run.describe()

        report = torture.check(killed_pids=killed)
        if was_killed:
            landed[f"{anchor}: {where_killed(torture, report, run.pid)}"] += 1
        now_in_hook = in_hook(report)
        max_in_hook = max(max_in_hook, len(now_in_hook))
        assert len(now_in_hook) <= 1, (
            f"after run {runs} (kills {len(killed)}): tasks inside a hook {now_in_hook}: "
            "only one run at a time, so at most one"
        )
        old, new = attempts(before), attempts(report)
        died_again = {lbl for lbl in new if new[lbl] > old.get(lbl, 0)}
        deaths_seen += sum(new[lbl] - old.get(lbl, 0) for lbl in died_again)
        assert died_again <= set(victim_before.values()), (
            f"run {runs}: attempts grew for {sorted(died_again)}, but the only action the "
            f"previous run could have died in was {sorted(victim_before.values())}"
        )

    kill_phase = time.monotonic() - began
    assert len(killed) == kills, (
        f"the work ran out after {len(killed)} of {kills} kills ({runs} runs): "
        "make the workload bigger"
    )

    # Finish with clean runs, then retry what the semantics fail by design.
    clean = finish(torture, killed)
    report = torture.check(killed_pids=killed)
    by_design = by_design_failures(torture, report)
    unexplained = {
        lbl: row["status"] for lbl, row in report.rows.items() if row["status"] != "done"
    }
    for lbl in by_design:
        unexplained.pop(lbl)
    assert not unexplained, f"actions not done after the clean runs: {unexplained}; " + (
        report.summary()
    )
    failed_tasks = sorted({report.rows[lbl]["task_id"] for lbl in by_design})
    for tid in failed_tasks:
        retried = torture.cli("retry", tid)
        assert retried.returncode == 0, retried.describe()
    clean += finish(torture, killed)

    final = torture.check(killed_pids=killed, final=True)
    checked = torture.cli("check")
    elapsed = time.monotonic() - began
    counts = (
        f"size {size}, seed {SEED}: {len(killed)} kills in {runs} runs ({exits} ended on "
        f"their own) in {kill_phase:.1f}s, then {clean} clean runs; {elapsed:.1f}s in all; "
        f"kills landed: {dict(sorted(landed.items()))}; deaths counted {deaths_seen}; "
        f"failed by design (killed while recovering) then retried: {len(by_design)} "
        f"{sorted(by_design)}; units redone {final.units_redone}; redo lines "
        f"{final.journal.get('redo', 0)}; at most {max_in_hook} task in a hook; "
        f"{final.summary()}"
    )
    print(f"\nchaos invariant: 0 lost, 0 stuck, every kill re-runs at most its action; {counts}")
    done = final.actions.get("done", 0)
    assert done == total_actions and final.tasks.get("finished") == total_tasks, counts
    assert final.journal.get("done") == total_actions, counts
    assert final.units_redone <= len(killed), counts
    assert final.journal.get("redo", 0) <= len(killed), counts
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.describe()
    assert any(where.endswith("inside execute") for where in landed), (
        f"no kill in execute: {counts}"
    )


def where_killed(torture: Torture, report: Report, pid: int) -> str:
    """Where the kill of `pid` landed, from the lock file, its journal lines and the db."""
    if torture.lock_holder() != pid:
        return "before the lock"
    lines = [e for e in read_journal(torture.journal)[0] if e.get("pid") == pid]
    finals = {e["label"] for e in lines if e["event"] in ("done", "redo")}
    if any(report.rows[lbl]["status"] != "done" for lbl in finals):
        return "after a done line, before the commit of done"
    if lines and lines[-1]["event"] in ("enter", "unit"):
        return "inside execute"
    if lines and lines[-1]["event"] == "change":
        return "in change_params_on_error or the commit after it"
    return "between hooks (queries, commits)"


def finish(torture: Torture, killed: set[int], limit: int = 20) -> int:
    """Clean runs (a 30 s budget each) until nothing is left to run; how many it took.
    A run that finds nothing due (all that is left waits for a delay) waits until then."""
    for n in range(limit):
        report = torture.check(killed_pids=killed)
        if not any(s in report.tasks for s in ("created", *IN_HOOK, "paused")):
            return n
        run = torture.run_once("--max-execution-time", 30)
        due = timed.next_due(run)
        assert run.returncode == 0 and (due or run.summary()), run.describe()
        assert "Traceback" not in run.stderr, run.describe()
        if due is not None:
            time.sleep(max(0.0, min(due - time.time(), 5.0)))  # the time it becomes due
    pytest.fail(f"still work left after {limit} clean runs: stuck? {report.summary()}")


def by_design_failures(torture: Torture, report: Report) -> set[str]:
    """Failed actions whose change_params_on_error was killed (the semantics fail them)."""
    events = read_db(torture.db)[2]
    found = set()
    for lbl, row in report.rows.items():
        if row["status"] != "failed":
            continue
        if any(
            e["task_id"] == row["task_id"]
            and e["rank"] == row["rank"]
            and e["new_status"] == "failed"
            and (e["message"] or "").startswith("change_params_on_error died")
            for e in events
        ):
            found.add(lbl)
    return found
