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
from dataclasses import dataclass, replace
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


@dataclass(frozen=True, slots=True)
class Concurrency:
    lock: LockMode = LockMode.FILE
    workers: int = 1
    lease: float = 60.0
    poll: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "lock", LockMode(self.lock))  # also from "file", "none"...

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
    found = Concurrency()
    if "lock" in value:
        lock = str(value["lock"]).strip().lower()
        if lock not in LOCKS:
            raise ValueError(f"lock must be one of {', '.join(LOCKS)}, got {value['lock']!r}")
        found = replace(found, lock=LockMode(lock))
    if "workers" in value:
        found = replace(found, workers=_checked("workers", WORKERS, value["workers"]))
    if "lease" in value:
        found = replace(found, lease=_checked("lease", LEASE.seconds, value["lease"]))
    if "poll" in value:
        found = replace(found, poll=_checked("poll", POLL.seconds, value["poll"]))
    if found.workers > 1 and found.lock is not LockMode.NONE:
        raise ValueError('workers > 1 needs lock = "none" (workers claiming tasks)')
    return found
