"""The invariants of a bgtaskex database, and of the journal its JournalActions wrote.

`check(db, journal, killed_pids=..., final=...)` asserts them all and returns a `Report`
(counts, for the tests to print and to put in their messages); `inspect(...)` returns the
same Report without asserting. Any test may call them at any time when no run is writing
(between runs, or after a kill). The database is read with plain SQL through SQLAlchemy
(`db` is a URL, or the path of an SQLite file); the rules come from docs/semantics.md
(#statuses, #write-order, #at-least-once) and the state machine (bgtaskex/run/):

Tasks
  T1  the status is known; a terminal task (finished/failed/cancelled) has no run_order
      and an ended_at, and holds no unique key; any other has both run_order =
      models.run_order(type, status) (the run will take it) and no ended_at.
  T2  finished: every action is done or skipped.
  T3  failed: at least one action failed, none pending or active, and no "corrupt state"
      event (the runner's last resort, never expected in these workloads).
  T4  cancelled: no action pending or active.
  T5  starting/running/recovering/paused: the current action exists and is the only
      active one; every action ranked before it has ended.
  T6  created (between actions): no action is active.
Actions
  A1  ranks are 1..n; the status is known; attempts >= 0; params is a JSON object.
  A2  pending: never started (no started_at, no ended_at); active and done: started;
      ended (done/skipped/failed/cancelled): an ended_at.
Rows
  R1  no action or event of a task that does not exist; an event's rank names an action
      of its task.
Events (the history is written in the same transaction as each status)
  E1  the task-status events (no rank) chain: the first is None -> created, each starts
      from where the previous ended, the last ends at the task's status.
  E2  the status events of each action chain from pending to its status (not checked for
      tasks that were retried or cancelled, which change actions without an event each).
Keys
  K1  no two tasks that have not ended hold the same unique key.
Journal (actions whose params name this journal; see tests/support/journal.py)
  J1  every line parses.
  J2  exclusion: between the "enter" and the "exit" of an execute, every line comes from
      that process and that action (so no two executes ever overlap, across processes
      too). A process in `killed_pids` may leave an execute open: it died there, and
      then it must never write again.
  J3  at most one "done" line per action; an action whose status is done has exactly
      one, and all its units 0..units-1, and its saved cursor is `units`.
  J4  a "done" line of an action that is not done: only mid-way (not `final`), and only
      for the action the last run was killed in: active, its task running or recovering
      (killed between the fsync'ed line and the commit of done, then maybe again while
      recovering) or paused for the retry delay of that death, or failed because
      change_params_on_error died after that, or, once such a failure was retried,
      pending or active again (the next execute finds its line and redoes nothing).
  J5  no execute was entered after the commit of its action's `done` (the final
      execute ran once), and the "done" line precedes that commit.
  J6  a "redo" line (execute ran again after its "done" line) or a unit done twice only
      after the process that wrote the earlier line was killed (`killed_pids`).
  J7  every label of the journal names an action of the database, once.
  J8  no execute is entered before its action is due: not before the enqueue's delay
      (params "not_before", epoch seconds, written by the workload), nor before the end
      of a snooze or of a crash's retry delay (the events "snoozed for Xs" and "tried
      again in Xs": the event's time + X), nor, when `retry_delay` is given, sooner than
      0.9 x retry_delay after the "execute raised" event of a poison action (mode
      "raise"). Event times are those of the write, a little after the delay was set:
      DELAY_SLACK is allowed.
final=True (the work is over) adds
  F1  every task has ended, no action is active, and J4 allows nothing.

test_invariants.py forges, for each rule above, a state that it alone reports.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bgtaskex.models import run_order

TERMINAL = {"finished", "failed", "cancelled"}
EXECUTING = {"starting", "running", "recovering", "paused"}
TASK_STATUSES = TERMINAL | EXECUTING | {"created"}
ACTION_STATUSES = {"pending", "active", "done", "skipped", "failed", "cancelled"}
ENDED_ACTIONS = {"done", "skipped", "failed", "cancelled"}
#: Seconds of clock rounding allowed when comparing journal times with event times.
CLOCK_SLACK = 0.001
#: Seconds allowed between setting a delay and writing its event (J8).
DELAY_SLACK = 0.1
#: The events that delay their action: "snoozed for 1.5s", "tried again in 0.3s".
DELAYED = re.compile(r"^execute of action \d+ (?:snoozed for|is tried again in) (\d+\.\d)s")


@dataclass
class Report:
    """What `inspect` found: counts and violations (empty when every invariant holds)."""

    tasks: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    events: int = 0
    journal: Counter[str] = field(default_factory=Counter)  # lines by event
    #: per label, lines by event ("enter", "done", "change", ...)
    by_label: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    #: per label, the database row of its action (task_id, rank, status, attempts, params)
    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: the task rows, by id
    task_rows: dict[int, dict[str, Any]] = field(default_factory=dict)
    units_redone: int = 0
    attempts_total: int = 0
    attempts_max: int = 0
    done_line_not_committed: int = 0  # J4 cases seen (killed between line and commit)
    #: per label, the times of its "enter" lines
    enters: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    violations: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def counts(c: Counter[str]) -> str:
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"

        return (
            f"tasks: {counts(self.tasks)}; actions: {counts(self.actions)}; "
            f"events {self.events}; journal lines: {counts(self.journal)}; "
            f"units redone {self.units_redone}; attempts total {self.attempts_total} "
            f"max {self.attempts_max}; done lines not yet committed "
            f"{self.done_line_not_committed}; violations {len(self.violations)}"
        )

    def message(self, limit: int = 40) -> str:
        shown = "\n  ".join(self.violations[:limit])
        more = len(self.violations) - limit
        tail = f"\n  ... and {more} more" if more > 0 else ""
        return f"{self.summary()}\n  {shown}{tail}"


def _url(db: str | Path) -> str:
    text = str(db)
    return text if "://" in text else f"sqlite:///{Path(text).resolve()}"


def _stamp(value: Any) -> float | None:
    """A database timestamp (naive UTC text on SQLite, aware datetime elsewhere) as epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return float(value.timestamp())


def json_params(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def read_db(
    db: str | Path,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(tasks, actions, events) as dicts, ordered by id."""
    import sqlalchemy

    url = sqlalchemy.make_url(_url(db))
    # One snapshot for the three tables (SQLite's read transactions already are one).
    options = {} if url.get_backend_name() == "sqlite" else {"isolation_level": "REPEATABLE READ"}
    engine = sqlalchemy.create_engine(url, **options)
    try:
        with engine.connect() as conn:
            found = []
            for table in ("bgtaskex_tasks", "bgtaskex_actions", "bgtaskex_events"):
                rows = conn.execute(sqlalchemy.text(f"SELECT * FROM {table} ORDER BY id"))
                found.append([dict(row._mapping) for row in rows])
            return found[0], found[1], found[2]
    finally:
        engine.dispose()


def read_journal(journal: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """(entries, lines that do not parse), in file order."""
    entries: list[dict[str, Any]] = []
    bad: list[str] = []
    try:
        with open(journal, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    bad.append(line)
                    continue
                if isinstance(entry, dict) and "event" in entry and "label" in entry:
                    entries.append(entry)
                else:
                    bad.append(line)
    except FileNotFoundError:
        pass
    return entries, bad


def inspect(
    db: str | Path,
    journal: str | Path | None = None,
    *,
    killed_pids: set[int] | frozenset[int] = frozenset(),
    final: bool = False,
    retry_delay: float | None = None,
) -> Report:
    """Check every invariant of the module docstring; never raises on a violation.
    `retry_delay`: the runs' retry_delay setting, when the workload has one (J8)."""
    report = Report()
    bad = report.violations.append
    tasks, actions, events = read_db(db)
    report.events = len(events)
    task_by_id = report.task_rows = {t["id"]: t for t in tasks}
    actions_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for a in actions:
        a["params"] = json_params(a["params"])
        report.actions[a["status"]] += 1
        report.attempts_total += a["attempts"] or 0
        report.attempts_max = max(report.attempts_max, a["attempts"] or 0)
        if a["task_id"] not in task_by_id:
            bad(f"R1 action {a['id']} belongs to task {a['task_id']}, which does not exist")
            continue
        actions_of[a["task_id"]].append(a)
    events_of: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        if e["task_id"] not in task_by_id:
            bad(f"R1 event {e['id']} belongs to task {e['task_id']}, which does not exist")
            continue
        events_of[e["task_id"]].append(e)

    for task in tasks:
        report.tasks[task["status"]] += 1
        _check_task(task, actions_of[task["id"]], events_of[task["id"]], final, bad)
    holders: dict[str, list[int]] = defaultdict(list)
    for task in tasks:
        if task["status"] not in TERMINAL and task.get("unique_key") is not None:
            holders[task["unique_key"]].append(task["id"])
    for key, ids in holders.items():
        if len(ids) > 1:
            bad(f"K1 unique key {key!r} held by the unended tasks {ids}")

    if journal is not None:
        _check_journal(
            Path(journal), actions_of, events_of, task_by_id, set(killed_pids), final, report
        )
        _check_delays(report, events_of, retry_delay)
    return report


def check(
    db: str | Path,
    journal: str | Path | None = None,
    *,
    killed_pids: set[int] | frozenset[int] = frozenset(),
    final: bool = False,
    retry_delay: float | None = None,
) -> Report:
    """`inspect`, and assert that no invariant is violated (the message lists them)."""
    report = inspect(db, journal, killed_pids=killed_pids, final=final, retry_delay=retry_delay)
    assert not report.violations, f"invariants violated ({'final' if final else 'mid-way'}): " + (
        report.message()
    )
    return report


def _check_task(
    task: dict[str, Any],
    acts: list[dict[str, Any]],
    events: list[dict[str, Any]],
    final: bool,
    bad: Any,
) -> None:
    tid, status = task["id"], task["status"]
    where = f"task {tid} ({status})"
    if status not in TASK_STATUSES:
        bad(f"T1 {where}: unknown status")
        return
    if status in TERMINAL:
        if task["run_order"] is not None or task["ended_at"] is None:
            bad(f"T1 {where}: run_order {task['run_order']}, ended_at {task['ended_at']}")
        if task.get("unique_key") is not None:
            bad(f"T1 {where}: still holds unique key {task['unique_key']!r}")
    else:
        expected = run_order(task["type"], status)
        if task["run_order"] != expected or task["ended_at"] is not None:
            bad(
                f"T1 {where}: run_order {task['run_order']} (expected {expected}), "
                f"ended_at {task['ended_at']}"
            )
        if final:
            bad(f"F1 {where}: not ended at the end of the work")
    by_status = Counter(a["status"] for a in acts)
    ranks = sorted(a["rank"] for a in acts)
    if ranks != list(range(1, len(acts) + 1)):
        bad(f"A1 {where}: action ranks {ranks}")
    for a in acts:
        what = f"{where} action {a['rank']} ({a['status']})"
        if a["status"] not in ACTION_STATUSES:
            bad(f"A1 {what}: unknown status")
        if (a["attempts"] or 0) < 0 or not isinstance(a["params"], dict):
            bad(f"A1 {what}: attempts {a['attempts']}, params {a['params']!r}")
        if a["status"] == "pending" and (a["started_at"] or a["ended_at"]):
            bad(f"A2 {what}: started_at {a['started_at']}, ended_at {a['ended_at']}")
        if a["status"] in ("active", "done") and a["started_at"] is None:
            bad(f"A2 {what}: no started_at")
        if a["status"] in ENDED_ACTIONS and a["ended_at"] is None:
            bad(f"A2 {what}: no ended_at")
    open_ = by_status["pending"] + by_status["active"]
    if status == "finished" and set(by_status) - {"done", "skipped"}:
        bad(f"T2 {where}: actions {dict(by_status)}")
    if status == "failed":
        if by_status["failed"] < 1 or open_:
            bad(f"T3 {where}: actions {dict(by_status)}")
        if any((e["message"] or "").startswith("corrupt state") for e in events):
            bad(f"T3 {where}: failed as corrupt")
    if status == "cancelled" and open_:
        bad(f"T4 {where}: actions {dict(by_status)}")
    if status in EXECUTING:
        current = [a for a in acts if a["rank"] == task["current_rank"]]
        active = [a["rank"] for a in acts if a["status"] == "active"]
        if not current or active != [task["current_rank"]]:
            bad(f"T5 {where}: current action {task['current_rank']}, active actions {active}")
        early = [
            a["rank"]
            for a in acts
            if task["current_rank"] is not None
            and a["rank"] < task["current_rank"]
            and a["status"] not in ENDED_ACTIONS
        ]
        if early:
            bad(f"T5 {where}: actions {early} before the current one have not ended")
    if status == "created" and by_status["active"]:
        bad(f"T6 {where}: actions {dict(by_status)}")
    if final and by_status["active"]:
        bad(f"F1 {where}: active actions at the end")

    ranks_set = set(ranks)
    for e in events:
        if e["rank"] is not None and e["rank"] not in ranks_set:
            bad(f"R1 {where}: event {e['id']} names action {e['rank']}, which does not exist")
    chain = [e for e in events if e["rank"] is None and e["new_status"] is not None]
    previous: str | None = None
    for i, e in enumerate(chain):
        if (i == 0 and (e["old_status"], e["new_status"]) != (None, "created")) or (
            i > 0 and e["old_status"] != previous
        ):
            bad(
                f"E1 {where}: event {e['id']} {e['old_status']} -> {e['new_status']} "
                f"after {previous}"
            )
        previous = e["new_status"]
    if previous != status:
        bad(f"E1 {where}: the last status event ends at {previous}")
    if any(
        (e["message"] or "").startswith("retried") or e["new_status"] == "cancelled" for e in chain
    ):
        return
    for a in acts:
        state = "pending"
        for e in events:
            if e["rank"] != a["rank"] or e["new_status"] is None:
                continue
            if e["old_status"] == e["new_status"]:  # a hook's error, in task statuses
                continue
            if e["old_status"] != state:
                bad(
                    f"E2 {where} action {a['rank']}: event {e['id']} "
                    f"{e['old_status']} -> {e['new_status']} after {state}"
                )
            state = e["new_status"]
        if state != a["status"]:
            bad(f"E2 {where} action {a['rank']}: events end at {state}, row is {a['status']}")


def _check_journal(
    journal: Path,
    actions_of: dict[int, list[dict[str, Any]]],
    events_of: dict[int, list[dict[str, Any]]],
    task_by_id: dict[int, dict[str, Any]],
    killed: set[int],
    final: bool,
    report: Report,
) -> None:
    bad = report.violations.append
    entries, unparsed = read_journal(journal)
    for line in unparsed[:5]:
        bad(f"J1 journal line does not parse: {line!r}")
    # A daemon killed takes its run's child process with it (PR_SET_PDEATHSIG).
    killed = killed | {e["pid"] for e in entries if e.get("ppid") in killed}

    # The actions of this journal, by label.
    mine = str(journal.resolve())
    for task_actions in actions_of.values():
        for a in task_actions:
            params = a["params"]
            if not isinstance(params, dict) or "label" not in params or "journal" not in params:
                continue
            if str(Path(params["journal"]).resolve()) != mine:
                continue
            label = params["label"]
            if label in report.rows:
                bad(f"J7 label {label!r} names two actions")
            report.rows[label] = a

    # J2: exclusion, in file order (appends are ordered by the kernel).
    current: tuple[Any, str] | None = None  # (pid, label) of the execute in progress
    dead: set[int] = set()
    for i, e in enumerate(entries):
        pid, label, event = e.get("pid"), e["label"], e["event"]
        report.journal[event] += 1
        report.by_label[label][event] += 1
        if event == "enter":
            report.enters[label].append(float(e["t"]))
        where = f"journal line {i + 1} ({event} {label} pid {pid})"
        if pid in dead:
            bad(f"J2 {where}: written by a process that died inside an earlier execute")
        if current is not None and current[0] != pid:
            if current[0] in killed:
                dead.add(current[0])  # it died in its execute; nobody else was inside
                current = None
            else:
                bad(f"J2 {where}: inside the execute of {current[1]} by pid {current[0]}")
                current = None
        if event == "enter":
            if current is not None:
                bad(f"J2 {where}: execute entered inside the execute of {current[1]}")
            current = (pid, label)
        elif event == "exit":
            if current != (pid, label):
                bad(f"J2 {where}: exit without its enter")
            current = None
        elif event in ("unit", "done", "redo"):
            if current != (pid, label):
                bad(f"J2 {where}: outside the execute of its action")
        elif current is not None:  # init, change: between executes
            bad(f"J2 {where}: inside the execute of {current[1]}")

    lines_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        lines_of[e["label"]].append(e)
    for label in lines_of:
        if label not in report.rows:
            bad(f"J7 journal label {label!r} names no action of the database")

    for label, a in report.rows.items():
        lines = lines_of.get(label, [])
        task = task_by_id[a["task_id"]]
        what = (
            f"action {label} (task {task['id']} {task['status']}, rank {a['rank']} {a['status']})"
        )
        done_lines = [e for e in lines if e["event"] == "done"]
        if len(done_lines) > 1:
            bad(
                f"J3 {what}: {len(done_lines)} 'done' lines, "
                f"from pids {[e['pid'] for e in done_lines]}"
            )

        # J6: a redo, or a unit done again, only after the earlier writer was killed.
        last_final: dict[str, Any] | None = None
        unit_by: dict[int, dict[str, Any]] = {}
        for e in lines:
            if e["event"] in ("done", "redo"):
                if e["event"] == "redo":
                    if last_final is None:
                        bad(f"J6 {what}: 'redo' without a 'done' line before it")
                    elif last_final["pid"] not in killed or last_final["pid"] == e["pid"]:
                        bad(
                            f"J6 {what}: execute ran again (pid {e['pid']}) after its "
                            f"'{last_final['event']}' line by pid {last_final['pid']}, "
                            "which was not killed"
                        )
                last_final = e
            elif e["event"] == "unit":
                n = e["n"]
                if n in unit_by:
                    report.units_redone += 1
                    first = unit_by[n]
                    if first["pid"] not in killed or first["pid"] == e["pid"]:
                        bad(
                            f"J6 {what}: unit {n} done again by pid {e['pid']} after pid "
                            f"{first['pid']}, which was not killed"
                        )
                unit_by[n] = e

        params = a["params"]
        units = int(params.get("units", 5))
        if a["status"] == "done":
            if len(done_lines) != 1:
                bad(f"J3 {what}: done with {len(done_lines)} 'done' lines")
            if params.get("mode", "work") == "work" and (
                sorted(unit_by) != list(range(units)) or params.get("cursor") != units
            ):
                bad(
                    f"J3 {what}: units in the journal {sorted(unit_by)}, saved cursor "
                    f"{params.get('cursor')}, of {units}"
                )
            committed = [
                e
                for e in events_of[a["task_id"]]
                if e["rank"] == a["rank"]
                and e["new_status"] == "done"
                and e["old_status"] != "done"
            ]
            if not committed:
                bad(f"J5 {what}: no event records its 'done'")
            else:
                at = _stamp(committed[-1]["at"])
                assert at is not None
                late = [e for e in lines if e["event"] == "enter" and e["t"] > at + CLOCK_SLACK]
                if late:
                    bad(
                        f"J5 {what}: execute entered {len(late)} time(s) after the commit of "
                        f"done (pids {[e['pid'] for e in late]})"
                    )
                if done_lines and done_lines[0]["t"] > at + CLOCK_SLACK:
                    bad(f"J5 {what}: its 'done' line was written after the commit of done")
        elif done_lines:
            report.done_line_not_committed += 1
            events = events_of[a["task_id"]]
            # With backoff on, the run that finds it running counts the death and pauses
            # the task until its retry delay is over: that pause is the same window.
            retry_wait = task["status"] == "paused" and any(
                (e["message"] or "").startswith(f"execute of action {a['rank']} is tried again")
                for e in events
            )
            window = a["status"] == "active" and (
                task["status"] in ("running", "recovering") or retry_wait
            )
            died_recovering = [
                e["id"]
                for e in events
                if e["rank"] == a["rank"]
                and e["new_status"] == "failed"
                and (e["message"] or "").startswith("change_params_on_error died")
            ]
            gave_up = a["status"] == "failed" and bool(died_recovering)
            # `retry` of the task that failed so: the action runs again from its params.
            retried = (
                a["status"] in ("pending", "active")
                and bool(died_recovering)
                and any(
                    e["rank"] is None
                    and e["id"] > died_recovering[0]
                    and (e["message"] or "").startswith("retried")
                    for e in events
                )
            )
            if final or not (window or gave_up or retried) or done_lines[-1]["pid"] not in killed:
                bad(
                    f"J4 {what}: has a 'done' line (pid {done_lines[-1]['pid']}"
                    f"{', killed' if done_lines[-1]['pid'] in killed else ''}) but is not done"
                    + (" at the end" if final else "")
                )


def _check_delays(
    report: Report, events_of: dict[int, list[dict[str, Any]]], retry_delay: float | None
) -> None:
    """J8: every "enter" of an action at or after the time it became due."""
    bad = report.violations.append
    enters = report.enters
    for label, a in report.rows.items():
        times = enters.get(label, [])
        if not times:
            continue
        params = a["params"]
        dues: list[tuple[float, float, str]] = []  # (from, due, why): enters after `from`
        if params.get("not_before") is not None:
            dues.append((float("-inf"), float(params["not_before"]) - CLOCK_SLACK, "enqueued"))
        for e in events_of[a["task_id"]]:
            if e["rank"] != a["rank"]:
                continue
            at = _stamp(e["at"])
            assert at is not None
            message = e["message"] or ""
            delayed = DELAYED.match(message)
            if delayed:
                dues.append((at, at + float(delayed[1]) - 0.05 - DELAY_SLACK, message))
            elif (
                retry_delay
                and params.get("mode") == "raise"
                and message.startswith("execute raised")
            ):
                dues.append((at, at + 0.9 * retry_delay - DELAY_SLACK, message))
        for since, due, why in dues:
            early = [t for t in times if since < t < due]
            if early:
                bad(
                    f"J8 action {label}: execute entered {due - min(early):.3f}s before it "
                    f"was due ({why})"
                )
