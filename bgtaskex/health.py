"""What `bgtaskex check` looks at (`Client.health`): stuck tasks, tasks waiting for a
module a run cannot import, the queue's size, the run lock, the record of runs (none
ended ok lately, the last one ended on storage or died) and tasks failed lately; and
how it says so."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import TYPE_CHECKING, Any

from .exceptions import BgtaskexError, InvalidRef
from .models import ACTIVE_STATUSES, DEMO_PROCESS, QueuePause, RunRecord, TaskFilter
from .processes import DEFAULT_EVERY, Process
from .registry import parse_ref
from .run.file_lock import describe_holder, lock_state
from .run.preflight import HOW_TO_DECLARE, ON_THE_PATH, module_problem
from .walltime import local_zone

if TYPE_CHECKING:
    from .config import Settings
    from .registry import Registry
    from .store.core import Store


@dataclass(frozen=True, slots=True)
class Late:
    """A process (None: the plain `run-once` runs) none of whose runs ended ok within
    `expected_within` seconds (its gap, budget and `stale_after`)."""

    process: str | None
    last_ok_end: datetime | None  # None: none of its kept runs ended ok
    expected_within: float


#: The shown outcomes of a process's latest run that `check` warns about.
FAILING = ("died", "refused", "storage", "failed")


@dataclass(frozen=True, slots=True)
class Health:
    """The health of a queue, read by `check_health`. A field is None (or empty) when
    `error` stopped the look before it was read."""

    stuck_after: float  # seconds untouched that make a task not ended stuck
    no_schema: bool = False  # the database has no bgtaskex schema yet
    stuck: int | None = None  # tasks not ended and untouched for over stuck_after
    stuck_ids: tuple[int, ...] = ()  # the first of them
    unimportable: int = 0  # tasks waiting for a module that cannot be imported...
    modules: tuple[tuple[str, str], ...] = ()  # ...each such module, and why
    waiting: int | None = None  # tasks not ended
    lock: str | None = None  # the file lock: "free", "held" or "stale"
    lock_holder: str = ""  # who holds it, or held it ("stale": a run that died)
    error: str | None = None  # what stopped the look short (the database, the lock file)
    paused: tuple[QueuePause, ...] = ()  # the queues an operator paused
    stale_after: float | None = None  # slack before a process is late; None: never
    run_expected: bool = False  # a process is configured, or a run was recorded before
    stale: bool = False  # `late` is not empty
    last_run: RunRecord | None = None  # the latest run recorded ("died" told)
    last_ok_end: datetime | None = None  # when the last run that ended ok ended
    late: tuple[Late, ...] = ()  # the processes (None: plain runs) late to end a run ok
    failing: tuple[RunRecord, ...] = ()  # latest runs (one per process) that did not end ok
    not_run: tuple[str, ...] = ()  # declared processes with no run recorded yet
    failed_within: float | None = None  # `--failed-within`, in seconds; None: not looked
    failed_recently: int | None = None  # tasks that failed within it...
    failed_ids: tuple[int, ...] = ()  # ...the latest of them
    missing_dirs: tuple[str, ...] = ()  # directories of the config's pythonpath not there

    def problems(self) -> list[str]:
        """Each problem as one sentence; none when all is well."""
        found: list[str] = []
        if self.stuck:
            more = ", ..." if self.stuck > len(self.stuck_ids) else ""
            found.append(
                f"{self.stuck} task(s) stuck, untouched for over {self.stuck_after:g}s "
                f"(ids {', '.join(map(str, self.stuck_ids))}{more})"
            )
        if self.modules:
            names = ", ".join(f"{module} ({why})" for module, why in self.modules)
            found.append(
                f"{self.unimportable} task(s) wait for a module that cannot be imported: "
                f"{names} ({self._module_advice()})"
            )
        long_paused = [p for p in self.paused if _age(p.paused_at) > self.stuck_after]
        if long_paused:
            found.append(
                f"{len(long_paused)} queue(s) paused for over {self.stuck_after:g}s: "
                + ", ".join(f"{p.queue} (since {_stamp(p.paused_at)})" for p in long_paused)
                + " (bgtaskex resume QUEUE)"
            )
        found += self._run_problems()
        if self.failed_recently:
            more = ", ..." if self.failed_recently > len(self.failed_ids) else ""
            found.append(
                f"{self.failed_recently} task(s) failed within the last "
                f"{_seconds(self.failed_within or 0)} "
                f"(ids {', '.join(map(str, self.failed_ids))}{more})"
            )
        if self.error is not None:
            found.append(self.error)
        return found

    def _module_advice(self) -> str:
        """What to do about the modules that cannot be imported, as their reasons say:
        declare those not declared, put those not found on the path."""
        reasons = {part for _module, why in self.modules for part in why.split(", ")}
        advice = []
        if "not declared" in reasons:
            advice.append(f"declare it with {HOW_TO_DECLARE}")
        if "not found" in reasons:
            where = ON_THE_PATH
            if self.missing_dirs:
                where += "; the config's pythonpath names a directory that does not exist: "
                where += ", ".join(self.missing_dirs)
            advice.append(where)
        return "; ".join(advice)

    def _run_problems(self) -> list[str]:
        found = [_late_sentence(late, self.stale_after) for late in self.late]
        if self.no_schema and self.run_expected:  # the daemon makes it as it starts
            found.append(
                "no bgtaskex schema in this database, yet the config declares processes: "
                "was it deleted, or do the runs use another database? (a first run creates it)"
            )
        for run in self.failing:
            if run.outcome == "storage":
                found.append(f"the last run ({_named(run)}) ended on a storage error: {run.error}")
            elif run.outcome == "died":
                why = f": {run.error}" if run.error else " (killed?)"
                found.append(f"the last run ({_named(run)}) died before its end{why}")
            elif run.outcome == "refused":
                found.append(f"the last run ({_named(run)}) was refused at start: {run.error}")
            else:
                found.append(f"the last run ({_named(run)}) failed: {run.error}")
        return found

    def notes(self) -> list[str]:
        """What is worth knowing about a healthy queue."""
        found: list[str] = []
        if self.no_schema and not self.run_expected:
            found.append("no schema yet (bgtaskex creates it on first enqueue or run)")
        if self.waiting is not None:
            found.append(f"{self.waiting} task(s) waiting")
        if self.lock == "held":
            found.append(f"a run is working{self.lock_holder}")
        elif self.lock == "stale":
            found.append(f"stale lock file of a dead run{self.lock_holder}, harmless")
        if self.paused:
            found.append(f"paused queue(s): {', '.join(p.queue for p in self.paused)}")
        found += [f"process {name} has not run yet" for name in self.not_run]
        last = self.last_run
        if last is not None and last.outcome in ("ok", "running"):
            found.append(f"last run {last.outcome} ({_named(last)})")
        return found


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _at(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _late_sentence(late: Late, stale_after: float | None) -> str:
    within = _seconds(late.expected_within)
    if late.process is None:  # plain runs: the sentences check always had
        if late.last_ok_end is None:
            return (
                f"no run has ended ok yet (stale_after {_seconds(stale_after or 0)}): "
                "is cron or the daemon running?"
            )
        ended = _at(late.last_ok_end)
        return f"no run has ended ok within {within} (the last one ended at {ended})"
    if late.last_ok_end is None:
        return f"no run of process {late.process} has ended ok yet (expected within {within})"
    return (
        f"no run of process {late.process} has ended ok within {within} "
        f"(the last one ended at {_at(late.last_ok_end)}): is the daemon running?"
    )


def _named(run: RunRecord) -> str:
    process = f", process {run.process}" if run.process else ""
    return f"run {run.run_id}{process}, {run.host}:{run.pid}, started {_at(run.started_at)}"


def check_health(
    store: Store, registry: Registry, settings: Settings, failed_within: float | None = None
) -> Health:
    """The health of the queue of `store`; with `failed_within` (seconds), the tasks
    that failed within it too. Creates, migrates and imports nothing; an error of the
    database or the lock file is reported in `Health.error`, with what was read before
    it."""
    found: dict[str, Any] = {"no_schema": store.no_schema, "stale_after": settings.stale_after}
    try:
        found.update(_runs(store, settings))
        if failed_within is not None:
            since = datetime.now(UTC) - timedelta(seconds=failed_within)
            failed, failed_ids = store.runs.failed_tasks_since(since)
            found.update(failed_recently=failed, failed_ids=tuple(failed_ids))
        since = datetime.now(UTC) - timedelta(seconds=settings.stuck_after)
        stuck, ids = store.admin.stuck_tasks(since)
        found.update(stuck=stuck, stuck_ids=tuple(ids))
        found.update(_unimportable(store, registry))
        if found.get("modules"):
            missing = [d for d in settings.pythonpath if not os.path.isdir(d)]
            found["missing_dirs"] = tuple(missing)
        found["waiting"] = store.count_tasks(TaskFilter(statuses=_active()))
        found["paused"] = tuple(store.queues.pauses())
        lock, holder = lock_state(settings.lock_path)
        found.update(lock=lock, lock_holder=describe_holder(holder))
    except BgtaskexError as err:
        found["error"] = str(err)
    return Health(settings.stuck_after, failed_within=failed_within, **found)


def _runs(store: Store, settings: Settings) -> dict[str, Any]:
    """The record of runs, per process: the last run, the latest run of each process
    that did not end ok (`FAILING`), the processes late to end a run ok (`_late`), and
    the declared processes that never ran. Nothing is expected before the schema
    exists; the demo's runs (`bgtaskex demo`) never count."""
    now = datetime.now(UTC)
    latest = store.runs.recent(limit=1)
    last = latest[0].shown(settings.died_after, now) if latest else None
    ends = store.runs.last_ok_ends()
    last_ok = max(ends.values(), default=None)
    found: dict[str, Any] = {"last_run": last, "last_ok_end": last_ok}
    declared = bool(settings.processes or settings.retention_rules)
    if store.no_schema:
        return found | {"run_expected": declared}
    runs = {
        r.process: r.shown(settings.died_after, now)
        for r in store.runs.latest_each()
        if r.process != DEMO_PROCESS
    }
    scheduled = settings.scheduled
    # The processes of this config, the plain runs, and (as check always did) the
    # process of the last run whatever it is.
    looked: set[str | None] = {p.name for p in scheduled} | {None}
    looked |= {last.process} if last else set()
    failing = [runs[p] for p in looked if p in runs and runs[p].outcome in FAILING]
    late = [_late(p, runs.get(p.name), ends.get(p.name), settings, now) for p in scheduled]
    if None in runs and not declared:  # plain runs from cron: any ok run counts
        any_ok = max((v for k, v in ends.items() if k != DEMO_PROCESS), default=None)
        late.append(_late(None, runs[None], any_ok, settings, now))
    found_late = tuple(x for x in late if x is not None)
    return found | {
        "run_expected": declared or bool(runs),
        "stale": bool(found_late),
        "late": found_late,
        "failing": tuple(sorted(failing, key=lambda r: r.id, reverse=True)),
        "not_run": tuple(p.name for p in scheduled if declared and p.name not in runs),
    }


def _late(
    process: Process | None,
    latest: RunRecord | None,
    last_ok: datetime | None,
    settings: Settings,
    now: datetime,
) -> Late | None:
    """Whether `process` (None: the plain runs, which any ok run keeps fresh) is late:
    no run of it ended ok within its expected gap (`every`, or the longest gap between
    its next cron times) plus its budget plus `stale_after`; counted from the last ok
    end, or the start of its latest run when none ended ok. Not late: a process that
    never ran, one whose window is closed now (counted from the window's start when it
    is open), a run of it going on within its budget plus `stale_after`."""
    stale_after = settings.stale_after
    if latest is None or stale_after is None:
        return None
    limit, since = stale_after, last_ok or latest.started_at
    if process is not None:
        if process.window is not None:
            local = now.astimezone(local_zone())
            opened = process.window.window_start(local)
            if opened is None:
                return None
            since = max(since, opened)
        budget = process.max_execution_time or settings.max_execution_time
        limit += _gap(process, now) + budget
    if latest.outcome == "running" and _age(latest.started_at) <= latest.budget + stale_after:
        return None
    if (now - since).total_seconds() <= limit:
        return None
    return Late(process.name if process else None, last_ok, limit)


def _gap(process: Process, now: datetime, fires: int = 8) -> float:
    """The longest time between two runs of `process`: its `every`, or the longest
    gap between its next `fires` cron times from `now`."""
    if not process.cron:
        return process.every or DEFAULT_EVERY
    trigger = process.trigger()
    times: list[datetime] = []
    moment = now
    while len(times) < fires:
        fire = trigger.get_next_fire_time(None, moment)
        if fire is None:
            break
        times.append(fire)
        moment = fire + timedelta(seconds=1)
    gaps = [(b - a).total_seconds() for a, b in pairwise(times)]
    return max(gaps, default=DEFAULT_EVERY)


def _unimportable(store: Store, registry: Registry) -> dict[str, Any]:
    """The tasks that wait for a module a run cannot import (not declared, or not on
    the path), and those modules with why. Nothing is imported here."""
    problem = module_problem(registry)
    why: dict[str, str | None] = {}  # module: why it cannot be imported, None if it can
    stuck: list[str] = []
    for ref in store.admin.waiting_refs():
        try:
            module = parse_ref(ref)[0]
        except InvalidRef:
            continue  # not a module's fault: the run fails such an action
        why[module] = problem(module)
        if why[module] is not None:
            stuck.append(ref)
    if not stuck:
        return {}
    modules = tuple((m, reason) for m, reason in sorted(why.items()) if reason)
    return {"unimportable": store.admin.count_tasks_waiting_on(stuck), "modules": modules}


def _age(moment: datetime) -> float:
    return (datetime.now(UTC) - moment).total_seconds()


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _active() -> frozenset[str]:
    return frozenset(s.value for s in ACTIVE_STATUSES)
