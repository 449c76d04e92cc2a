"""The plan of a run: what one run serves and within which bounds, decided once.

`RunPlan.of(settings, process)` is the one place that knows which queues a run serves
(a scheduled process's own queues, or every queue that no scheduled process names),
its budget, the end of its window, the callable that plans work and the lock mode. The
CLI, the idle probe, the client, the daemon's wake-ups and the storage's due-task query
all take it (or its `routing`) instead of working it out again.

Standard library only: the idle `run-once` builds a plan before SQLAlchemy is imported.
The records are named tuples, not dataclasses: importing `dataclasses` (with `inspect`)
would cost that start about 12 ms (bench/startup.py).
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

from .concurrency import LockMode
from .exceptions import OutsideWindow
from .walltime import local_now

if TYPE_CHECKING:
    from .config import Settings
    from .processes import Process


class Routing(NamedTuple):
    """Which queues a run serves: `queues` only (None: every queue) except `excluded`."""

    queues: tuple[str, ...] | None = None
    excluded: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings, process: Process | None = None) -> Routing:
        """A process's queues (or every queue other processes leave it); without one,
        every queue that no scheduled process names (`run-once` without `--process`)."""
        if process is None:
            return cls(None, settings.claimed_queues)
        return cls(process.queues, process.exclude_queues)

    def serves(self, queue: str) -> bool:
        if self.queues is not None and queue not in self.queues:
            return False
        return queue not in self.excluded

    @property
    def everything(self) -> bool:
        """No queue is left out."""
        return self.queues is None and not self.excluded

    def narrowed(self, names: Collection[str]) -> Routing:
        """Only the queues of `names` that this routing serves, too."""
        return Routing(tuple(sorted(q for q in names if self.serves(q))), ())


class RunPlan(NamedTuple):
    """What one run serves and within which bounds.

    `budget` is the run's `max_execution_time` in seconds; `not_after` (a `time.time()`
    stamp, or None) caps the deadline at the end of a scheduled process's window;
    `planner` is that process's callable (`module:function`), called with the client
    before the tasks; `wait` is how long to wait for the run lock.
    """

    routing: Routing
    budget: float
    lock: LockMode
    process: str | None = None
    not_after: float | None = None
    planner: str | None = None
    wait: float = 0.0

    @classmethod
    def of(
        cls,
        settings: Settings,
        process: Process | None = None,
        *,
        budget: float | None = None,
        wait: float = 0.0,
        now: datetime | None = None,
    ) -> RunPlan:
        """The plan of a run now: every queue no process names, with the settings' budget;
        or as `process`, with its queues, budget and callable, and only inside its
        window (OutsideWindow otherwise), which caps the deadline. `now` (aware, in the
        local zone as `walltime.local_now()` gives it) stands in for the clock in the
        window check."""
        lock = settings.concurrency.lock
        if process is None:
            chosen = budget or settings.max_execution_time
            return cls(Routing.of(settings), chosen, lock, wait=wait)
        return cls(
            Routing.of(settings, process),
            budget or process.max_execution_time or settings.max_execution_time,
            lock,
            process=process.name,
            not_after=_window_end(process, now),
            planner=process.callable,
            wait=wait,
        )

    @property
    def planned(self) -> bool:
        """A run that must start even with nothing due: a callable plans work first, or a
        window bounds it."""
        return self.planner is not None or self.not_after is not None


def _window_end(process: Process, now: datetime | None) -> float | None:
    if process.window is None:
        return None
    now = now or local_now()  # the local zone with its DST rules, not a fixed offset
    end = process.window.window_end(now)
    if end is None:
        opens = process.window.next_occurrence(now)
        when = f"opens {opens:%a %Y-%m-%d %H:%M}" if opens else "disabled"
        raise OutsideWindow(
            f"process {process.name}: outside its window {process.window} ({when}); nothing done"
        )
    return end.timestamp()
