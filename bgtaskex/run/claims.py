"""Claims under leases: how a run holds the task it executes, in every lock mode.

A run takes a task by writing its name, a fencing token one higher than the task's last,
and the end of its lease. With `lock = "none"` a worker claims before reading the task
(`RunStorage.claim`, SKIP LOCKED); with the file or database lock the claim goes with the
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
from dataclasses import dataclass, field

from ..action import Cancelled
from ..exceptions import ClaimLost, StorageError
from ..store.contract import RunStorage

log = logging.getLogger("bgtaskex.claims")  # a stable name, for log filters

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


@dataclass
class Hold:
    """The claim on the task a worker works on now.

    With `shared` claims the task comes claimed (`token` set, `claimed`); otherwise the
    claim goes with the task's first write: `claim_from` is the token read with the
    task until that write is staged, `claimed` once it is committed (`sent` is when)."""

    task_id: int | None = None
    token: int | None = None  # the fencing token every write of the task carries
    claim_from: int | None = None  # token read with the task, claim not staged yet
    claimed: bool = False  # the claim is committed
    sent: float = 0.0  # time.monotonic() before the claim went to the database
    lost: threading.Event = field(default_factory=threading.Event)  # taken over

    def take(self, task_id: int, token: int | None, *, claimed: bool) -> None:
        self.lost.clear()
        self.task_id, self.claimed = task_id, claimed
        self.token, self.claim_from = (token, None) if claimed else (None, token)

    def end(self) -> None:
        self.token, self.claim_from, self.claimed, self.task_id = None, None, False, None

    def lose(self, lost: ClaimLost) -> Cancelled:
        """Note that another run took the claim over; the Cancelled to raise in a hook."""
        self.lost.set()
        return Cancelled(str(lost))


class Heartbeat:
    """Keeps the lease of the task a worker holds, from two threads of its own (started
    at the first `hold`).

    The beater extends the lease every third of its length and checks every
    `check_every` seconds that the run still holds its lock (`lock_alive`; when it does
    not, `lock_lost` is set and logged once). The watchdog only reads the clock: when
    the lease is about to run out with no beat through (the database is cut off, a
    connection hangs, the process was stopped past its lease), or a beat finds that
    another run claimed the task, the process exits at once (`fence`): another run may
    be executing the task, and a hook may not stop when asked. A claim lost at a write
    (`ClaimLost`) is the runner's business."""

    def __init__(
        self,
        store: RunStorage,
        lease: float,
        *,
        lock_alive: Callable[[], bool] | None = None,
        lock_lost: threading.Event | None = None,
        check_every: float = 1.0,
    ) -> None:
        self.store, self.lease = store, lease
        self.lock_alive, self.lock_lost = lock_alive, lock_lost or threading.Event()
        self.check_every = min(check_every, lease / 6)  # a beat within half the lease
        self.margin = min(2.0, lease / 10)  # fence this long before the lease ends
        self._held: tuple[int, int] | None = None
        self._held_until = 0.0
        self._kill: tuple[float, Callable[[], object]] | None = None  # the hard limit
        self._guard = threading.Lock()
        self._done = threading.Event()
        self._threads: list[threading.Thread] = []

    def hold(self, task_id: int, token: int, since: float) -> None:
        """Keep the lease of `task_id` alive from now on: claimed with `token`, the lease
        set no sooner than `since` (a `time.monotonic()` taken before the claim was
        sent), so it ends no sooner than `since` + lease."""
        with self._guard:
            if self._held != (task_id, token):
                self._held = (task_id, token)
                self._held_until = since + self.lease
            if not self._threads:
                self._threads = [
                    threading.Thread(target=target, name=name, daemon=True)
                    for target, name in (
                        (self._beat, "bgtaskex-heartbeat"),
                        (self._watch, "bgtaskex-watchdog"),
                    )
                ]
                for thread in self._threads:
                    thread.start()

    def limit(self, kill_at: float | None, kill: Callable[[], object] | None = None) -> None:
        """The hard limit of the hook about to run: once `time.monotonic()` passes
        `kill_at` the watchdog calls `kill` (which logs and exits the process: see
        `failures.Overrun`); None lifts it (the hook returned)."""
        with self._guard:
            self._kill = None if kill_at is None or kill is None else (kill_at, kill)

    def drop(self) -> None:
        with self._guard:
            self._held = None
            self._kill = None

    def close(self) -> None:
        self.drop()
        self._done.set()
        for thread in self._threads:
            thread.join(self.check_every + 1)  # a beat hung on the network is let be

    def _beat(self) -> None:
        """Beat once a third of the lease has gone since it was last set (a failed beat
        is tried again at the next check)."""
        while not self._done.wait(self.check_every):
            self._check_lock()
            with self._guard:
                held, held_until = self._held, self._held_until
            if held is not None and time.monotonic() >= held_until - 2 * self.lease / 3:
                self._extend()

    def _watch(self) -> None:
        """The one watchdog: the lease (`fence`, exit 4) and the hard limit of the hook
        running (`kill_after`, exit 7)."""
        while not self._done.wait(min(0.25, self.lease / 10)):
            with self._guard:
                held, held_until, kill = self._held, self._held_until, self._kill
            now = time.monotonic()
            if kill is not None and now >= kill[0]:
                kill[1]()
            if held is not None and now >= held_until - self.margin:
                fence(held[0], "no heartbeat got through before the lease ran out")

    def _check_lock(self) -> None:
        if self.lock_alive is None or self.lock_lost.is_set():
            return
        try:
            alive = self.lock_alive()
        except Exception:  # a broken connection is a lost lock
            alive = False
        if not alive:
            log.warning(
                "the run lock is gone (its file was removed or replaced, or the database "
                "ended the session holding it): the run starts nothing more and asks the "
                "current action to stop; the tasks it holds stay fenced by their leases"
            )
            self.lock_lost.set()

    def _extend(self) -> None:
        """One beat."""
        with self._guard:
            held = self._held
        if held is None:
            return
        task_id, token = held
        sent = time.monotonic()  # the new lease ends no sooner than this + lease
        try:
            extended = self.store.heartbeat(task_id, token, self.lease)
        except StorageError as err:
            log.warning("task %s: heartbeat failed (%s); retrying", task_id, err)
            return
        with self._guard:
            if self._held != held:
                return  # dropped meanwhile: the claim ended normally
            if extended:
                self._held_until = sent + self.lease
                return
        fence(task_id, f"another run claimed it (token {token} superseded)")


def fence(task_id: int, why: str) -> None:
    """The process may no longer hold the task it is executing: another run may take it
    over now, or has, and the hook may not stop when asked. Exit at once, as PHP's
    max_execution_time ends the original; the next run recovers the task as after a
    crash."""
    log.critical(
        "task %s: lost its lease (%s): exiting now, so that no other run executes it beside "
        "this one; the next run recovers it",
        task_id,
        why,
    )
    logging.shutdown()
    os._exit(FENCED_EXIT)
