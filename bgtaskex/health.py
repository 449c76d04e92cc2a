"""What `bgtaskex check` looks at (`Client.health`): stuck tasks, tasks waiting for a
module a run cannot import, the queue's size, the run lock, the record of runs (none
ended ok lately, the last one ended on storage or died) and tasks failed lately; and
how it says so."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .exceptions import BgtaskexError, InvalidRef
from .models import ACTIVE_STATUSES, DEMO_PROCESS, QueuePause, RunRecord, TaskFilter
from .registry import parse_ref
from .run.file_lock import describe_holder, lock_state
from .run.preflight import HOW_TO_DECLARE, ON_THE_PATH, findable

if TYPE_CHECKING:
    from .config import Settings
    from .registry import Registry
    from .store.core import Store


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
    stale_after: float | None = None  # no run ended ok this long is a problem; None: never
    run_expected: bool = False  # a process is configured, or a run was recorded before
    stale: bool = False  # a run is expected and none ended ok within stale_after
    last_run: RunRecord | None = None  # the latest run recorded ("died" told)
    last_ok_end: datetime | None = None  # when the last run that ended ok ended
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
        found: list[str] = []
        if self.stale:
            within = _seconds(self.stale_after or 0)
            if self.last_ok_end is None:
                found.append(
                    f"no run has ended ok yet (stale_after {within}): "
                    "is cron or the daemon running?"
                )
            else:
                found.append(
                    f"no run has ended ok within {within} "
                    f"(the last one ended at {_at(self.last_ok_end)})"
                )
        last = self.last_run
        if last is not None and last.outcome == "storage":
            found.append(f"the last run ({_named(last)}) ended on a storage error: {last.error}")
        elif last is not None and last.outcome == "died":
            why = f": {last.error}" if last.error else " (killed?)"
            found.append(f"the last run ({_named(last)}) died before its end{why}")
        elif last is not None and last.outcome == "refused":
            found.append(f"the last run ({_named(last)}) was refused at start: {last.error}")
        return found

    def notes(self) -> list[str]:
        """What is worth knowing about a healthy queue."""
        found: list[str] = []
        if self.no_schema:
            found.append("no schema yet (bgtaskex creates it on first enqueue or run)")
        if self.waiting is not None:
            found.append(f"{self.waiting} task(s) waiting")
        if self.lock == "held":
            found.append(f"a run is working{self.lock_holder}")
        elif self.lock == "stale":
            found.append(f"stale lock file of a dead run{self.lock_holder}, harmless")
        if self.paused:
            found.append(f"paused queue(s): {', '.join(p.queue for p in self.paused)}")
        last = self.last_run
        if last is not None and last.outcome in ("ok", "failed", "running"):
            found.append(f"last run {last.outcome} ({_named(last)})")
        return found


def _seconds(value: float) -> str:
    return f"{value:g}s"


def _at(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


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
    """The last run, the end of the last one that ended ok, and whether that is too
    long ago. A run is expected once a process is configured (or retention rules), or
    once a run was recorded (cron ran, and stopped?), not before the schema exists; a
    run going on that started
    within its budget plus `stale_after` counts as fresh."""
    now = datetime.now(UTC)
    latest = store.runs.recent(limit=1)
    last = latest[0].shown(settings.died_after, now) if latest else None
    last_ok = store.runs.last_ok_end()
    declared = bool(settings.processes or settings.retention_rules)
    # No schema yet: nothing ever ran here, and check answers as it always did. The
    # demo's runs (`bgtaskex demo`) are no cron that stopped.
    recorded = last is not None and last.process != DEMO_PROCESS
    expected = not store.no_schema and (declared or recorded)
    stale_after, stale = settings.stale_after, False
    if expected and stale_after is not None:
        fresh = last_ok is not None and (now - last_ok).total_seconds() <= stale_after
        going = last is not None and last.outcome == "running"
        if going and last is not None:
            fresh = fresh or (now - last.started_at).total_seconds() <= last.budget + stale_after
        stale = not fresh
    return {"run_expected": expected, "stale": stale, "last_run": last, "last_ok_end": last_ok}


def _unimportable(store: Store, registry: Registry) -> dict[str, Any]:
    """The tasks that wait for a module a run cannot import (not declared, or not on
    the path), and those modules with why. Nothing is imported here."""
    why: dict[str, str | None] = {}  # module: why it cannot be imported, None if it can
    stuck: list[str] = []
    for ref in store.admin.waiting_refs():
        try:
            module = parse_ref(ref)[0]
        except InvalidRef:
            continue  # not a module's fault: the run fails such an action
        if module not in why:
            reasons = [] if registry.allowed(module) else ["not declared"]
            reasons += [] if findable(module) else ["not found"]
            why[module] = ", ".join(reasons) or None
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
