"""One worker of a run: takes due tasks one after another, each through the state
machine, until none is due, the deadline has passed, or a stop is asked.

In every lock mode a task is held under a claim (a lease and a fencing token) while the
worker works on it: taken before the read with `lock = "none"` (shared claims), else
with the task's first write; kept alive by the heartbeat; ended with its last write.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from contextlib import suppress

from ..action import Cancelled
from ..config import Settings
from ..exceptions import ClaimLost, StorageError, TaskInterrupted
from ..models import RunSummary, Task
from ..plan import Routing
from ..registry import Registry
from ..store.contract import RunStorage
from .batch import WriteBatch
from .claims import Claims, Heartbeat, Hold
from .machine import Machine
from .observer import Outcome, RunObserver

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters


def new_run_id() -> str:
    return secrets.token_hex(4)


class Worker:
    """Works on due tasks until none is due or the deadline has passed."""

    def __init__(
        self,
        store: RunStorage,
        registry: Registry,
        *,
        deadline: float,
        run_id: str | None = None,
        settings: Settings | None = None,
        observer: RunObserver | None = None,
        routing: Routing | None = None,
        stop: threading.Event | None = None,
        claims: Claims | None = None,
        lock_alive: Callable[[], bool] | None = None,
        lock_lost: threading.Event | None = None,
    ) -> None:
        run_id = run_id or new_run_id()
        self.store, self.run_id, self.deadline = store, run_id, deadline
        self.observer = observer or RunObserver()
        self.routing = routing
        self.stop = stop or threading.Event()
        self.lock_lost = lock_lost or threading.Event()
        self.claims = claims
        self.hold = Hold()
        self.batch = WriteBatch(store, run_id, claims, self.hold)
        self.heartbeat = (
            Heartbeat(store, claims.lease, lock_alive=lock_alive, lock_lost=self.lock_lost)
            if claims is not None
            else None
        )
        self.machine = Machine(
            store,
            registry,
            settings or Settings(),
            run_id=run_id,
            deadline=deadline,
            batch=self.batch,
            hold=self.hold,
            heartbeat=self.heartbeat,
            observer=self.observer,
            stop_requested=self.stop_requested,
        )

    def stop_requested(self) -> bool:
        """Stop asked (signal, daemon stopping), the run's lock is lost, or the claim of
        the task held is lost: finish the current hook, start nothing new."""
        return self.stop.is_set() or self.lock_lost.is_set() or self.hold.lost.is_set()

    def work(self) -> RunSummary:
        """Work on due tasks until none is left or the run must end; what was done."""
        started = time.monotonic()
        broken: set[int] = set()  # tasks not to take again this run (errors, left, lost)
        try:
            while not self._should_end():
                task = self._next(broken)
                if task is None:
                    break
                self.observer.task_started(task)
                if self.claims is None:
                    outcome = self._work_guarded(task, broken)
                else:
                    outcome = self._work_under_claim(task, broken)
                if outcome in (Outcome.LEFT, Outcome.LOST):
                    broken.add(task.id)
                self.batch.count(task.id, outcome, task.name)
                self.observer.task_ended(task, outcome)
            self.batch.flush()
        except StorageError:
            # The last writes may still go through (a statement that failed once).
            with suppress(StorageError):
                self.batch.flush()
            self._abandon()
            raise
        except BaseException:
            self._abandon()
            raise
        finally:
            if self.heartbeat is not None:
                self.heartbeat.close()
        return self._summary(time.monotonic() - started)

    def so_far(self) -> RunSummary:
        """What this worker did until now (counts only): what a run that an error
        ended records."""
        return self._summary(0.0)

    def work_on(self, task: Task) -> Outcome:
        """Take one task as far as this run allows, and write all of it (`work` leaves a
        task's last writes to go with the next task's first)."""
        outcome = self.machine.advance(task)
        self.batch.flush(task.id)
        return outcome

    def _summary(self, elapsed: float) -> RunSummary:
        counts, machine = self.batch.counts, self.machine
        return RunSummary(
            run_id=self.run_id,
            finished=counts[Outcome.FINISHED],
            paused=counts[Outcome.PAUSED] + counts[Outcome.DEFERRED],
            failed=counts[Outcome.FAILED],
            errors=counts[Outcome.ERROR],
            cancelled=counts[Outcome.CANCELLED],
            lost=counts[Outcome.LOST],
            actions=machine.actions_run,
            elapsed=elapsed,
            left_waiting=counts[Outcome.LEFT],
            missing_modules=tuple(sorted(machine.missing_modules)),
            max_overrun=machine.hooks.max_overrun,
        )

    def _abandon(self) -> None:
        """An error ends the run in the middle of a task: end its lease (its status
        stays), so the next run recovers it at once, as after a crash."""
        hold = self.hold
        held, token = hold.task_id, hold.token
        if self.heartbeat is not None:
            self.heartbeat.drop()
        if held is not None and token is not None and hold.claimed:
            with suppress(Exception):
                self.store.release(held, token)

    def _should_end(self) -> bool:
        """Time is up, a stop was asked, or the run's lock is gone (the heartbeat says
        so in the log)."""
        return time.time() >= self.deadline or self.stop.is_set() or self.lock_lost.is_set()

    def _next(self, broken: set[int]) -> Task | None:
        if self.claims is not None and self.claims.shared:
            self.batch.flush()
            self.hold.sent = time.monotonic()
            return self.store.claim(
                self.claims.worker,
                self.run_id,
                self.claims.lease,
                exclude=broken,
                routing=self.routing,
            )
        # A task whose last writes still pend is not yet marked as this run's.
        unwritten = self.batch.unwritten_tasks()
        if len(unwritten) > 1:
            self.batch.flush()
            unwritten.clear()
        return self.store.next_task(
            skip_run=self.run_id,
            skip_task=min(unwritten, default=None),
            exclude=broken,
            routing=self.routing,
        )

    def _work_under_claim(self, task: Task, broken: set[int]) -> Outcome:
        """Work on a task under a claim: taken before the read (shared) or with the
        task's first write, kept alive by the heartbeat, every write fenced by its
        token, and ended with the task's last write."""
        assert self.claims is not None and self.heartbeat is not None
        self.hold.take(task.id, task.claim_token, claimed=self.claims.shared)
        outcome = self._work_guarded(task, broken)
        self.heartbeat.drop()
        try:
            self.batch.end_claim(task.id)
        except ClaimLost as lost:
            outcome = self._lost(lost)
        except TaskInterrupted:
            self.store.end_cancelled(task.id, self.run_id, None, None)
            outcome = Outcome.CANCELLED
        self.hold.end()
        return outcome

    def _lost(self, lost: ClaimLost | Cancelled) -> Outcome:
        self.hold.lost.set()
        log.warning("run %s: %s; its writes stop here", self.run_id, lost)
        return Outcome.LOST

    def _work_guarded(self, task: Task, broken: set[int]) -> Outcome:
        """The state machine on one task; what it raises becomes the task's outcome,
        except a storage error, which ends the run."""
        try:
            return self.machine.advance(task)
        except ClaimLost as lost:
            return self._lost(lost)
        except TaskInterrupted:  # cancelled (or ended) by someone else meanwhile
            self.store.end_cancelled(task.id, self.run_id, None, None)
            return Outcome.CANCELLED
        except Cancelled as stopped:  # raised by a checkpoint: the task was cancelled
            if self.hold.lost.is_set():  # (the checkpoint ended it), or the claim was lost
                return self._lost(stopped)
            return Outcome.CANCELLED
        except StorageError:
            raise  # the database is gone: so is this run
        except Exception:
            # A bug or a corrupt row must not stop every run at this task.
            log.exception(
                "run %s: task %s: unexpected error; left for the next run", self.run_id, task.id
            )
            broken.add(task.id)
            self.batch.flush()
            return Outcome.ERROR
