"""How runs share the work: one runner per host (file lock), one in the whole cluster
(database lock), or any number of workers claiming tasks under leases (no lock).

    [concurrency]
    lock = "none"      # "file" (default), "database" or "none"
    workers = 4        # threads per run (lock = "none" only)
    lease = "60s"      # how long a claim holds without a heartbeat
    poll = "1s"        # how often an idle daemon looks for interactive tasks

From the environment or an option, the same as one line:
`BGTASKEX_CONCURRENCY="lock=none workers=4 lease=60s"`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .bounds import LEASE, POLL, CountRule

T = TypeVar("T")

MAX_WORKERS = 64
WORKERS = CountRule(1, MAX_WORKERS)


class LockMode(enum.StrEnum):
    """How runs share the work; each has its strategy in `bgtaskex.run.locks`."""

    FILE = "file"  # one run at a time on this host
    DATABASE = "database"  # one run at a time in the cluster
    NONE = "none"  # no run lock: workers claim tasks under leases


LOCKS = tuple(mode.value for mode in LockMode)


class Concurrency:
    """How runs share the work (`[concurrency]`): the lock mode, and with no lock the
    workers per run, their lease and the idle daemon's poll. Immutable.

    A plain class, not a dataclass: the idle `run-once` builds one, and importing
    `dataclasses` (with `inspect`) costs it about 12 ms (bench/startup.py)."""

    __slots__ = ("lease", "lock", "poll", "workers")
    lock: LockMode
    workers: int
    lease: float
    poll: float

    def __init__(
        self,
        lock: LockMode | str = LockMode.FILE,
        workers: int = 1,
        lease: float = 60.0,
        poll: float = 1.0,
    ) -> None:
        init = object.__setattr__  # the one place that sets them
        init(self, "lock", LockMode(lock))  # also from "file", "none"...
        init(self, "workers", workers)
        init(self, "lease", lease)
        init(self, "poll", poll)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Concurrency is immutable: cannot set {name}")

    def __reduce__(self) -> tuple[type[Concurrency], tuple[LockMode, int, float, float]]:
        return (Concurrency, self._values())  # pickled through __init__, not setattr

    def _values(self) -> tuple[LockMode, int, float, float]:
        return (self.lock, self.workers, self.lease, self.poll)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Concurrency) and self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        lock, workers, lease, poll = self._values()
        return f"Concurrency(lock={lock!r}, workers={workers}, lease={lease}, poll={poll})"

    @property
    def claims(self) -> bool:
        """Whether workers claim tasks under leases (runs do not exclude each other)."""
        return self.lock is LockMode.NONE

    def describe(self) -> str:
        if self.lock is LockMode.FILE:
            return "one run at a time on this host (file lock)"
        if self.lock is LockMode.DATABASE:
            return "one run at a time in the cluster (database lock)"
        return f"{self.workers} worker(s) per run claiming tasks, lease {self.lease:g}s (no lock)"


def _checked(key: str, rule: Callable[[object], T], value: object) -> T:
    try:
        return rule(value)
    except ValueError as err:
        raise ValueError(f"{key}: {err}") from None


def parse_concurrency(value: object) -> Concurrency:
    """A `[concurrency]` table, or its one-line form `lock=none workers=4`."""
    if isinstance(value, str):
        items: dict[str, Any] = {}
        for part in value.replace(",", " ").split():
            key, sep, item = part.partition("=")
            if not sep:
                raise ValueError(f"expected key=value, got {part!r}")
            items[key.strip()] = item.strip()
        value = items
    if not isinstance(value, Mapping):
        raise ValueError("expected a table (lock, workers, lease, poll)")
    unknown = sorted(set(value) - {"lock", "workers", "lease", "poll"})
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: lock, workers, lease, poll)")
    lock = LockMode.FILE
    if "lock" in value:
        text = str(value["lock"]).strip().lower()
        if text not in LOCKS:
            raise ValueError(f"lock must be one of {', '.join(LOCKS)}, got {value['lock']!r}")
        lock = LockMode(text)
    found = Concurrency(
        lock,
        _checked("workers", WORKERS, value["workers"]) if "workers" in value else 1,
        _checked("lease", LEASE.seconds, value["lease"]) if "lease" in value else 60.0,
        _checked("poll", POLL.seconds, value["poll"]) if "poll" in value else 1.0,
    )
    if found.workers > 1 and found.lock is not LockMode.NONE:
        raise ValueError('workers > 1 needs lock = "none" (workers claiming tasks)')
    return found
