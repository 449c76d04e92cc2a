"""Claims under leases: how a run holds the task it executes, in every lock mode.

A run takes a task by writing its name, a fencing token one higher than the task's last,
and the end of its lease. With `lock = "none"` a worker claims before reading the task
(`Store.claim`, SKIP LOCKED); with the file or database lock the claim goes with the
task's first write (`Change.claim_as`), so it costs no commit of its own. While it holds
the task, a `Heartbeat` extends the lease; every write carries the token. So a second
run, even one let in by a lost lock, passes over a task whose lease is alive, and once
another run has taken a task over (the lease ran out: the holder was frozen, cut off, or
died) the late writes of the old holder are refused (`ClaimLost`) instead of
overwriting the new owner's.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .exceptions import StorageError
from .store import Store

log = logging.getLogger(__name__)

#: The exit code of a process that ended itself because it could not keep its lease.
FENCED_EXIT = 4


@dataclass(frozen=True, slots=True)
class Claims:
    """How a run's worker holds tasks: as `worker` (host:pid:mark/n, shown by `show`),
    under a lease of `lease` seconds. `shared`: runs do not exclude each other (`lock =
    "none"`), so the worker claims a task before reading it."""

    worker: str
    lease: float = 60.0
    shared: bool = False


class Heartbeat:
    """Extends the lease of the task a worker holds, every third of the lease, from a
    thread of its own (started at the first `hold`). When the claim turns out to be lost
    (the token was superseded, or no beat got through before the lease ran out), sets
    `lost`: the runner then asks the action to stop and writes nothing more about the
    task. `lock_alive`, checked every `check_every` seconds, tells whether the run still
    holds its lock; when it does not, `lock_lost` is set once."""

    def __init__(
        self,
        store: Store,
        lease: float,
        lost: threading.Event,
        *,
        lock_alive: Callable[[], bool] | None = None,
        lock_lost: threading.Event | None = None,
        check_every: float = 1.0,
    ) -> None:
        self.store, self.lease, self.lost = store, lease, lost
        self.lock_alive, self.lock_lost = lock_alive, lock_lost or threading.Event()
        self.check_every = min(check_every, lease / 3)
        self._held: tuple[int, int] | None = None
        self._held_until = 0.0
        self._guard = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, task_id: int, token: int) -> None:
        """Keep the lease of `task_id` (claimed with `token`) alive from now on."""
        with self._guard:
            if self._held != (task_id, token):
                self._held = (task_id, token)
                self._held_until = time.monotonic() + self.lease
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._beat, name="bgtaskex-heartbeat", daemon=True
                )
                self._thread.start()

    def drop(self) -> None:
        with self._guard:
            self._held = None

    def close(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Heartbeat:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _beat(self) -> None:
        next_beat = time.monotonic() + self.lease / 3
        while not self._done.wait(max(0.0, min(self.check_every, next_beat - time.monotonic()))):
            self._check_lock()
            if time.monotonic() >= next_beat:
                extended = self._extend()
                next_beat = time.monotonic() + (self.lease / 3 if extended else self.check_every)

    def _check_lock(self) -> None:
        if self.lock_alive is None or self.lock_lost.is_set():
            return
        try:
            alive = self.lock_alive()
        except Exception:  # a broken connection is a lost lock
            alive = False
        if not alive:
            self.lock_lost.set()

    def _extend(self) -> bool:
        """One beat: False when it did not get through (try again soon)."""
        with self._guard:
            held, held_until = self._held, self._held_until
        if held is None:
            return True
        task_id, token = held
        sent = time.monotonic()  # the new lease ends no sooner than this + lease
        try:
            if self.store.heartbeat(task_id, token, self.lease):
                with self._guard:
                    if self._held == held:
                        self._held_until = sent + self.lease
                return True
            why = "another run claimed it"
        except StorageError as err:
            if time.monotonic() < held_until - min(2.0, self.lease / 6):
                log.warning("task %s: heartbeat failed (%s); retrying", task_id, err)
                return False
            with self._guard:
                if self._held == held:
                    _fence(task_id, err)
            return True
        with self._guard:
            if self._held != held:
                return True  # dropped meanwhile: the claim ended normally
        log.warning(
            "task %s: lost the claim (token %s): %s; asking its action to stop",
            task_id,
            token,
            why,
        )
        self.lost.set()
        return True


def _fence(task_id: int, err: Exception) -> None:
    """The lease of a task whose hook is running is about to run out and no heartbeat
    gets through (the database is cut off from this host, not from others): another run
    may take the task over in a moment, and the hook may not stop when asked. Exit at
    once, as PHP's max_execution_time ends the original; the next run recovers the task
    as after a crash."""
    log.critical(
        "task %s: the lease runs out and no heartbeat gets through (%s): exiting now, so "
        "that no other run executes the task beside this one; the next run recovers it",
        task_id,
        err,
    )
    logging.shutdown()
    os._exit(FENCED_EXIT)
