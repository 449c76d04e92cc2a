"""The write batch: what a run has decided and not yet written, and the writing of it.

A status must be durable before the hook it announces runs, and no sooner is needed: the
state machine *stages* a task's new status with the action changes and events that go
with it (`stage_status`), and `flush` writes everything staged in one transaction right
before the next hook (or at the end of the run). So "action i done" and "action i+1
running", also across tasks, cost one commit. Between the two only the run's own code and
a read run; a crash there is a crash just before the commit, which the next run recovers
from like any other. The first change of a task also takes its claim (file and database
locks), so that costs no commit either.

A task cancelled or taken over by another run meanwhile makes the store refuse its
changes: the others are written one by one, and the refused task is ended as cancelled
or counted as lost (a task's outcome is counted once its last writes are in).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..exceptions import ClaimLost, DatabaseUnavailable, StorageError, TaskInterrupted
from ..models import (
    ActionChange,
    ActionRecord,
    ActionStatus,
    Change,
    NewEvent,
    Progress,
    Task,
    TaskStatus,
)
from ..store.contract import RunStorage
from .claims import Claims, Hold
from .observer import Outcome

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters

#: The outcomes that end a task: each logged as `task N (name) <outcome>`.
_LOGGED_ENDS = frozenset({Outcome.FINISHED, Outcome.FAILED, Outcome.CANCELLED})


@dataclass
class TaskWrites:
    """One task as the run works on it: its status and its actions' as the run left them,
    and the action changes and events staged to go with its next status."""

    task: Task
    status: str
    actions: dict[int, ActionRecord]
    action_status: dict[int, ActionStatus]
    staged: dict[int, ActionChange] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)
    order: list[int] | None = None  # the ranks, sorted (next_pending)
    cursor: int = 0
    counted: dict[int, int] = field(default_factory=dict)  # attempts after a death counted

    @classmethod
    def of(cls, task: Task) -> TaskWrites:
        actions = {a.rank: a for a in task.actions}
        return cls(task, task.status, actions, {r: a.status for r, a in actions.items()})

    def stage(
        self,
        rank: int,
        status: ActionStatus | None = None,
        params: dict[str, Any] | None = None,
        attempts: int | None = None,
        message: str = "",
        error: str | None = None,
        progress: Progress | None = None,
        elapsed: float = 0.0,
        last_failure: str | None = None,
    ) -> None:
        """Stage a change of action `rank` (and the event of its new status, if any);
        `last_failure` "" clears it."""
        old = self.staged.get(rank, ActionChange(rank))
        self.staged[rank] = ActionChange(
            rank,
            status=status or old.status,
            params=params if params is not None else old.params,
            attempts=attempts if attempts is not None else old.attempts,
            progress=progress or old.progress,
            elapsed=old.elapsed + elapsed,
            last_failure=last_failure if last_failure is not None else old.last_failure,
        )
        if status is not None and status != self.action_status[rank]:
            self.events.append(NewEvent(rank, self.action_status[rank], status, message, error))
            self.action_status[rank] = status

    def next_pending(self) -> int | None:
        """The first pending action: a cursor over the ranks, as an action never goes
        back to pending within a run (a long chain costs no quadratic scan)."""
        if self.order is None:
            self.order = sorted(self.action_status)
        while self.cursor < len(self.order):
            rank = self.order[self.cursor]
            if self.action_status[rank] is ActionStatus.PENDING:
                return rank
            self.cursor += 1
        return None

    def any_failed(self) -> bool:
        return any(s is ActionStatus.FAILED for s in self.action_status.values())


class WriteBatch:
    """The changes a worker has staged and not yet written, and the count of its tasks'
    outcomes (fixed when a task's last writes are refused)."""

    def __init__(self, store: RunStorage, run_id: str, claims: Claims | None, hold: Hold) -> None:
        self.store, self.run_id, self.claims, self.hold = store, run_id, claims, hold
        self.unwritten: list[Change] = []
        self.counts = dict.fromkeys(Outcome, 0)
        self._ended: dict[int, Outcome] = {}  # tasks done with, whose last writes pend
        self._names: dict[int, str] = {}  # their names, for the log line of their end

    def stage_status(
        self,
        work: TaskWrites,
        status: TaskStatus,
        message: str,
        current_rank: int | None = None,
        *,
        not_before: datetime | None = None,
    ) -> None:
        """Stage the task's new status with every staged action change and event; the
        task's first staged change also takes its claim (when it came unclaimed). The
        task is not due before `not_before` (a status change without one clears it)."""
        events = list(work.events)
        if status != work.status:
            events.append(NewEvent(None, work.status, status.value, message))
        hold = self.hold
        change = Change(
            work.task.id,
            self.run_id,
            status=status,
            current_rank=current_rank,
            actions=tuple(work.staged.values()),
            events=tuple(events),
            token=hold.token,
            not_before=not_before,
        )
        if hold.claim_from is not None and self.claims is not None:
            change = replace(
                change, token=hold.claim_from, claim_as=self.claims.worker, lease=self.claims.lease
            )
            hold.token, hold.claim_from = hold.claim_from + 1, None
        self.unwritten.append(change)
        work.status = status
        work.staged.clear()
        work.events.clear()

    def stage_event(
        self,
        task_id: int,
        event: NewEvent,
        action: ActionChange | None = None,
        not_before: datetime | None = None,
    ) -> None:
        """Stage an event without a status (a hook's error: the task keeps its status),
        with the `action` change (execute's `last_failure`) and the retry delay that go
        with it."""
        change = Change(
            task_id,
            self.run_id,
            actions=() if action is None else (action,),
            events=(event,),
            token=self.hold.token,
            not_before=not_before,
        )
        self.unwritten.append(change)

    def unwritten_tasks(self) -> set[int]:
        return {change.task_id for change in self.unwritten}

    def count(self, task_id: int, outcome: Outcome, name: str = "") -> None:
        """Count how the run left a task, once its last writes are in (recounted if they
        are refused; never counted if a storage error loses them, so the record of a run
        that such an error ended counts only what was committed). A task's end is logged
        then too: a cancel that comes before makes it cancelled, not finished."""
        if any(change.task_id == task_id for change in self.unwritten):
            self._ended[task_id] = outcome
            self._names[task_id] = name
        else:
            self._log_end(task_id, name, outcome)
            self.counts[outcome] += 1

    def _log_end(self, task_id: int, name: str, outcome: Outcome) -> None:
        if outcome in _LOGGED_ENDS:
            log.info("run %s: task %s (%s) %s", self.run_id, task_id, name, outcome.value)

    def _settle(self, refused: Collection[int] = ()) -> None:
        """Count and log the end of the tasks done with whose last writes are now in."""
        for task_id, outcome in self._ended.items():
            if task_id not in refused:
                self._log_end(task_id, self._names.get(task_id, ""), outcome)
                self.counts[outcome] += 1
        self._ended.clear()
        self._names.clear()

    def end_claim(self, task_id: int) -> None:
        """End the claim with the task's last write (if it still pends), else alone."""
        hold = self.hold
        if hold.lost.is_set() or hold.token is None:
            return  # never claimed, or another run holds it now
        last = self.unwritten[-1] if self.unwritten else None
        if last is not None and last.task_id == task_id:
            self.unwritten[-1] = replace(last, release=True)
            if self.claims is not None and self.claims.shared:
                self.flush(task_id)
        elif hold.claimed:
            self.flush(task_id)
            self.store.release(task_id, hold.token)

    def flush(self, current: int | None = None) -> None:
        """Write the unwritten changes in one transaction.

        When a task was cancelled or claimed by another run meanwhile, its changes are
        not written: the other tasks' are, then a task already done with is ended as
        cancelled (or counted as lost), and for the task being worked on (`current`)
        TaskInterrupted (or ClaimLost) is raised.
        """
        changes, self.unwritten = self.unwritten, []
        if not changes:
            return
        try:
            self._apply(changes)
        except (TaskInterrupted, ClaimLost):
            refused: dict[int, TaskInterrupted | ClaimLost] = {}
            for change in changes:
                if change.task_id not in refused:
                    try:
                        self._apply([change])
                    except (TaskInterrupted, ClaimLost) as err:
                        refused[change.task_id] = err
            for task_id, why in sorted(refused.items()):
                if task_id != current:
                    self._recount(task_id, why)
            self._settle(refused)
            if current in refused:
                raise refused[current] from None
        self._settle()

    def _apply(self, changes: list[Change]) -> None:
        """`store.apply`, tried once more after one failed statement (a lock timeout, a
        serialisation failure), which must not turn into a death the next run would
        blame on the hook that just returned."""
        sent = time.monotonic()
        try:
            self.store.apply(*changes)
        except (DatabaseUnavailable, TaskInterrupted, ClaimLost):
            raise
        except StorageError as err:
            log.info("run %s: %s; writing it again", self.run_id, err)
            time.sleep(0.05)
            self.store.apply(*changes)
        hold = self.hold
        if any(c.claim_as is not None and c.task_id == hold.task_id for c in changes):
            hold.claimed, hold.sent = True, sent

    def _recount(self, task_id: int, err: TaskInterrupted | ClaimLost) -> None:
        """A task already done with whose last writes were refused."""
        if isinstance(err, TaskInterrupted):
            self.store.end_cancelled(task_id, self.run_id, None, None)
            now = Outcome.CANCELLED
            self._log_end(task_id, self._names.get(task_id, ""), now)
        else:
            log.warning("run %s: %s; its last writes are dropped", self.run_id, err)
            now = Outcome.LOST
        if task_id in self._ended:  # counted as `now`, not as what the run decided
            self.counts[now] += 1
