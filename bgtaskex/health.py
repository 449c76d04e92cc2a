"""What `bgtaskex check` looks at (`Client.health`): stuck tasks, tasks waiting for a
module a run cannot import, the queue's size and the run lock; and how it says so."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .exceptions import BgtaskexError, InvalidRef
from .models import ACTIVE_STATUSES, QueuePause, TaskFilter
from .registry import parse_ref
from .run.file_lock import describe_holder, lock_state
from .run.preflight import HOW_TO_DECLARE, findable

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
                f"{names} (declare it with {HOW_TO_DECLARE})"
            )
        long_paused = [p for p in self.paused if _age(p.paused_at) > self.stuck_after]
        if long_paused:
            found.append(
                f"{len(long_paused)} queue(s) paused for over {self.stuck_after:g}s: "
                + ", ".join(f"{p.queue} (since {_stamp(p.paused_at)})" for p in long_paused)
                + " (bgtaskex resume QUEUE)"
            )
        if self.error is not None:
            found.append(self.error)
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
        return found


def check_health(store: Store, registry: Registry, settings: Settings) -> Health:
    """The health of the queue of `store`. Creates, migrates and imports nothing; an
    error of the database or the lock file is reported in `Health.error`, with what was
    read before it."""
    found: dict[str, Any] = {"no_schema": store.no_schema}
    try:
        since = datetime.now(UTC) - timedelta(seconds=settings.stuck_after)
        stuck, ids = store.admin.stuck_tasks(since)
        found.update(stuck=stuck, stuck_ids=tuple(ids))
        found.update(_unimportable(store, registry))
        found["waiting"] = store.count_tasks(TaskFilter(statuses=_active()))
        found["paused"] = tuple(store.queues.pauses())
        lock, holder = lock_state(settings.lock_path)
        found.update(lock=lock, lock_holder=describe_holder(holder))
    except BgtaskexError as err:
        found["error"] = str(err)
    return Health(settings.stuck_after, **found)


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
