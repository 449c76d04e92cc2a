"""The lock modes as strategies: how runs share the work (`[concurrency] lock`).

- `file`: one run at a time on this host, an OS file lock (`file_lock.RunLock`);
- `database`: one run at a time in the cluster, a lock held by the server (`cluster_lock`);
- `none`: no run lock; workers claim tasks under leases beside any other run.

`lock_for(mode)` gives the strategy; nothing else compares lock modes. No SQLAlchemy at
import: the idle `run-once` calls `busy_before_start` before the storage is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Protocol

from ..concurrency import LockMode
from ..exceptions import ConfigError
from .file_lock import RunLock, lock_is_held, raise_if_held

if TYPE_CHECKING:
    from ..config import Settings
    from ..store.contract import RunStorage
    from ..store.core import Store

#: Tells whether the lock a run holds still guards it (None: nothing to watch).
StillHeld = Callable[[], bool] | None


class LockStrategy(Protocol):
    """One lock mode."""

    @property
    def works_on_sqlite(self) -> bool:
        """Whether an embedded SQLite database can serve this mode (else a server)."""
        ...

    def hold(
        self, store: RunStorage, settings: Settings, wait: float
    ) -> AbstractContextManager[StillHeld]:
        """Hold the run lock for the block (LockBusy when another run holds it after
        `wait` seconds); the block gets a function telling whether it is still held."""
        ...

    def run_in_progress(self, store: Store, settings: Settings) -> bool:
        """Whether some run holds the lock now (a task left running may be executing)."""
        ...

    def busy_before_start(self, settings: Settings) -> None:
        """LockBusy when a run surely holds the lock: a cheap look before anything heavy
        is imported (the run still takes the lock for real)."""
        ...


class FileLock:
    """One run at a time on this host: an OS lock on `settings.lock_path`."""

    works_on_sqlite = True

    @contextmanager
    def hold(self, store: RunStorage, settings: Settings, wait: float) -> Iterator[StillHeld]:
        with RunLock(settings.lock_path, wait=wait) as held:
            yield held.still_held

    def run_in_progress(self, store: Store, settings: Settings) -> bool:
        return lock_is_held(settings.lock_path)

    def busy_before_start(self, settings: Settings) -> None:
        raise_if_held(settings.lock_path)  # before SQLAlchemy is even imported


class DatabaseLock:
    """One run at a time in the cluster: a lock the database server holds."""

    works_on_sqlite = False

    @contextmanager
    def hold(self, store: RunStorage, settings: Settings, wait: float) -> Iterator[StillHeld]:
        with store.cluster_lock(wait=wait) as still_held:
            yield still_held

    def run_in_progress(self, store: Store, settings: Settings) -> bool:
        return store.admin.cluster_lock_held()

    def busy_before_start(self, settings: Settings) -> None:
        pass


class NoLock:
    """No run lock: every worker claims the task it takes under a lease."""

    works_on_sqlite = False

    @contextmanager
    def hold(self, store: RunStorage, settings: Settings, wait: float) -> Iterator[StillHeld]:
        if store.dialect == "sqlite":
            raise ConfigError(
                'lock = "none" needs PostgreSQL or MariaDB/MySQL: on SQLite the file lock '
                "keeps one runner"
            )
        yield None

    def run_in_progress(self, store: Store, settings: Settings) -> bool:
        return False  # no live claim, so no worker is executing it

    def busy_before_start(self, settings: Settings) -> None:
        pass


_STRATEGIES: dict[LockMode, LockStrategy] = {
    LockMode.FILE: FileLock(),
    LockMode.DATABASE: DatabaseLock(),
    LockMode.NONE: NoLock(),
}


def lock_for(mode: LockMode) -> LockStrategy:
    """The strategy of lock mode `mode`."""
    return _STRATEGIES[mode]
