"""The self-test of the torture suite's oracle (invariants.py): every one of its rules can
fail. A real run leaves a clean state, which passes; then, per rule, one forged copy of
that state (the database, the journal, or both) is reported by exactly that rule and by
no other, so a rule that stopped checking anything would be noticed here.

Rules about the database alone are inspected without the journal, so that a forged row
does not also count as a journal mismatch (whose rules, J*, have forgeries of their own).
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bgtaskex.models import run_order
from tests.reliability.conftest import Torture
from tests.reliability.invariants import __doc__ as RULES_DOC
from tests.reliability.invariants import inspect
from tests.support import journal as ja

#: The rules the docstring of invariants.py lists ("  T1  ...").
RULES = sorted(set(re.findall(r"^  ([TAREKJF]\d)  ", RULES_DOC or "", re.M)))


@dataclass(frozen=True)
class Forged:
    rule: str
    sql: tuple[str, ...] = ()
    journal: Callable[[list[str]], list[str]] | None = None  # the lines, changed
    with_journal: bool = False  # inspect the journal too (always when `journal` is set)
    final: bool = False
    killed: bool = False  # the process that wrote the journal counts as killed


def line(event: str, label: str, pid: int, t: float, **more: Any) -> str:
    return json.dumps({"event": event, "label": label, "pid": pid, "t": t, **more}) + "\n"


def forgeries(a: int, b: int, type_: str, t0: float, later: float) -> dict[str, Forged]:
    """Task `a` (actions t00.a1, t00.a2) and task `b` (t01), both finished, each forged
    into one violation. `t0`: a journal time before any commit; `later`: after every
    commit."""
    task = f"UPDATE bgtaskex_tasks SET {{}} WHERE id = {a}"
    action2 = f"UPDATE bgtaskex_actions SET {{}} WHERE task_id = {a} AND rank = 2"
    last_status = (
        "UPDATE bgtaskex_events SET new_status = '{}' WHERE id = (SELECT max(id) FROM "
        "bgtaskex_events WHERE task_id = {} AND rank IS NULL AND new_status IS NOT NULL)"
    )
    action2_done = (
        f"UPDATE bgtaskex_events SET new_status = '{{}}' WHERE task_id = {a} AND rank = 2 "
        "AND new_status = 'done'"
    )

    def executing(status: str, rank: int, tid: int = a) -> tuple[str, ...]:
        order = run_order(type_, status)
        return (
            f"UPDATE bgtaskex_tasks SET status = '{status}', run_order = {order}, "
            f"ended_at = NULL, current_rank = {rank} WHERE id = {tid}",
            last_status.format(status, tid),
        )

    def action2_active(tid: int = a) -> tuple[str, ...]:
        return (
            f"UPDATE bgtaskex_actions SET status = 'active', ended_at = NULL "
            f"WHERE task_id = {tid} AND rank = 2",
            f"DELETE FROM bgtaskex_events WHERE task_id = {tid} AND rank = 2 "
            "AND new_status = 'done'",
        )

    first_event_at = f"(SELECT at FROM bgtaskex_events WHERE task_id = {a} ORDER BY id LIMIT 1)"
    return {
        "an ended task still runnable": Forged("T1", (task.format("run_order = 5"),)),
        "an ended task holding its unique key": Forged("T1", (task.format("unique_key = 'k'"),)),
        "finished with a cancelled action": Forged(
            "T2", (action2.format("status = 'cancelled'"), action2_done.format("cancelled"))
        ),
        "failed without a failed action": Forged(
            "T3", (task.format("status = 'failed'"), last_status.format("failed", a))
        ),
        "cancelled with a pending action": Forged(
            "T4",
            (
                task.format("status = 'cancelled'"),
                last_status.format("cancelled", a),
                action2.format("status = 'pending', started_at = NULL, ended_at = NULL"),
            ),
        ),
        "running with no action active": Forged("T5", executing("running", 2)),
        "created with an action active": Forged(
            "T6", (*executing("created", 2), *action2_active())
        ),
        "negative attempts": Forged("A1", (action2.format("attempts = -1"),)),
        "done without an end": Forged("A2", (action2.format("ended_at = NULL"),)),
        "an orphan action and events": Forged(
            "R1", (f"DELETE FROM bgtaskex_tasks WHERE id = {a}",)
        ),
        "a history that does not start at created": Forged(
            "E1",
            (
                "UPDATE bgtaskex_events SET old_status = 'running' WHERE id = (SELECT min(id) "
                f"FROM bgtaskex_events WHERE task_id = {a})",
            ),
        ),
        "an action history with a gap": Forged(
            "E2",
            (
                f"DELETE FROM bgtaskex_events WHERE task_id = {a} AND rank = 1 "
                "AND new_status = 'active'",
            ),
        ),
        "paused at the end of the work": Forged(
            "F1", (*executing("paused", 2), *action2_active()), final=True
        ),
        "one unique key held by two paused tasks": Forged(
            "K1",
            (
                "DROP INDEX ix_bgtaskex_tasks_unique_key",
                *executing("paused", 2),
                *action2_active(),
                *executing("paused", 2, b),
                *action2_active(b),
                f"UPDATE bgtaskex_tasks SET unique_key = 'k' WHERE id IN ({a}, {b})",
            ),
        ),
        "a line that does not parse": Forged("J1", journal=lambda lines: [*lines, "{not json\n"]),
        "a write inside another execute": Forged(
            "J2",
            journal=lambda lines: [
                lines[0],
                line("init", "t00.a2", json.loads(lines[0])["pid"], t0),
                *lines[1:],
            ],
        ),
        "a done action without its line": Forged(
            "J3", journal=lambda lines: [x for x in lines if not is_line(x, "done", "t00.a2")]
        ),
        "a done line for an action that failed": Forged(
            "J4",
            (
                action2.format("status = 'failed'"),
                action2_done.format("failed"),
                task.format("status = 'failed'"),
                last_status.format("failed", a),
            ),
            with_journal=True,
        ),
        "a done line for an action retried though it never failed by design": Forged(
            "J4",
            (
                f"UPDATE bgtaskex_tasks SET status = 'created', current_rank = NULL, "
                f"run_order = {run_order(type_, 'created')}, ended_at = NULL WHERE id = {a}",
                "INSERT INTO bgtaskex_events (task_id, at, old_status, new_status, message) "
                f"VALUES ({a}, {first_event_at}, 'finished', 'created', "
                "'retried: its failed actions')",
                action2.format("status = 'pending', started_at = NULL, ended_at = NULL"),
            ),
            with_journal=True,
            killed=True,
        ),
        "an execute entered after the commit of done": Forged(
            "J5",
            journal=lambda lines: [
                *lines,
                line("enter", "t01.a1", 2, later),
                line("exit", "t01.a1", 2, later),
            ],
        ),
        "a redo after a process that was not killed": Forged(
            "J6",
            journal=lambda lines: [
                *lines,
                line("enter", "t00.a1", 5, t0),
                line("redo", "t00.a1", 5, t0),
                line("exit", "t00.a1", 5, t0),
            ],
        ),
        "an execute entered during its snooze": Forged(
            "J8",
            (
                "INSERT INTO bgtaskex_events (task_id, at, rank, message) VALUES "
                f"({a}, {first_event_at}, 1, 'execute of action 1 snoozed for 3600.0s')",
            ),
            with_journal=True,
        ),
        "an execute entered before the enqueue's delay": Forged(
            "J8",
            (
                f"UPDATE bgtaskex_actions SET params = json_set(params, '$.not_before', {later}) "
                f"WHERE task_id = {a} AND rank = 1",
            ),
            with_journal=True,
        ),
        "a label that names no action": Forged(
            "J7",
            journal=lambda lines: [
                *lines,
                line("enter", "ghost", 6, t0),
                line("exit", "ghost", 6, t0),
            ],
        ),
    }


def is_line(text: str, event: str, label: str) -> bool:
    entry = json.loads(text)
    return bool(entry["event"] == event and entry["label"] == label)


def test_every_rule_of_the_invariants_can_fail(torture: Torture) -> None:
    torture.enqueue(
        [[torture.params(f"t{t:02d}.a{r}", units=2, unit_ms=1) for r in (1, 2)] for t in (0, 1)]
    )
    run = torture.run_once("--max-execution-time", 30)
    assert run.returncode == 0, run.describe()
    clean = torture.check(final=True)
    assert not inspect(torture.db, final=True).violations
    lines = torture.journal.read_text(encoding="utf-8").splitlines(keepends=True)
    snapshot = torture.dir / "snapshot.db"
    with sqlite3.connect(torture.db) as src, sqlite3.connect(snapshot) as dst:
        src.backup(dst)
    first, second = sorted(task["id"] for task in torture.tasks())
    (type_,) = {task["type"] for task in torture.tasks()}
    t0 = json.loads(lines[0])["t"]
    forged = forgeries(first, second, type_, t0, later=t0 + 3600)
    assert sorted({f.rule for f in forged.values()}) == RULES, "a rule without a forgery"

    found = {}
    for name, forgery in forged.items():
        with sqlite3.connect(snapshot) as src, sqlite3.connect(torture.db) as dst:
            src.backup(dst)
        changed = forgery.journal(lines) if forgery.journal else lines
        torture.journal.write_text("".join(changed), encoding="utf-8")
        conn = sqlite3.connect(torture.db, isolation_level=None)
        conn.execute("PRAGMA foreign_keys=OFF")
        for statement in forgery.sql:
            changed_rows = conn.execute(statement).rowcount
            assert changed_rows >= 1 or statement.startswith("DROP"), (
                f"{name}: no row for {statement}"
            )
        conn.close()
        journal = torture.journal if forgery.journal or forgery.with_journal else None
        killed = {json.loads(x)["pid"] for x in changed} if forgery.killed else set()
        report = inspect(torture.db, journal, killed_pids=killed, final=forgery.final)
        found[name] = sorted({v.split()[0] for v in report.violations})
        assert found[name] == [forgery.rule], (
            f"{name}: expected {forgery.rule} alone, got {report.message()}"
        )
    print(
        f"\noracle invariant: the clean state passes ({clean.summary()}); each of the "
        f"{len(RULES)} rules reports its forged state, alone: {found}"
    )


def test_a_done_line_of_a_failure_by_design_stays_allowed_once_retried(torture: Torture) -> None:
    """Killed right after its "done" line, then inside change_params_on_error: the
    action fails by design (docs/semantics.md#at-least-once) with its line written, and
    `retry` makes it pending again. Every check holds from there to the end (J4 reported
    this state after test_chaos retried such a failure), and the execute after the retry
    finds the line and redoes nothing."""
    torture.enqueue([[torture.params("t00.a1", units=2, unit_ms=1)]], ref=ja.REF_DYING_ONCE)
    (task_id,) = (task["id"] for task in torture.tasks())
    killed: set[int] = set()

    def run_once(exit_code: int, status: str) -> None:
        run = torture.run_once("--max-execution-time", 30)
        assert run.returncode == exit_code, run.describe()
        if exit_code == -signal.SIGKILL:
            killed.add(run.pid)
        report = torture.check(killed_pids=killed)
        assert report.task_rows[task_id]["status"] == status, report.summary()

    run_once(-signal.SIGKILL, "running")  # after the "done" line
    run_once(-signal.SIGKILL, "recovering")  # in change_params_on_error
    run_once(0, "failed")  # found recovering: the action fails
    retried = torture.cli("retry", task_id)
    assert retried.returncode == 0, retried.describe()
    report = torture.check(killed_pids=killed)
    assert report.rows["t00.a1"]["status"] == "pending", report.summary()
    run_once(0, "finished")
    final = torture.check(killed_pids=killed, final=True)
    assert (final.journal["done"], final.journal["redo"], final.units_redone) == (1, 1, 0), (
        final.summary()
    )
