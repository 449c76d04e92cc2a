"""Immutable value objects that cross the storage boundary."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple


class TaskType(StrEnum):
    INTERACTIVE = "interactive"  # a user is waiting: taken first
    CRON = "cron"


class TaskStatus(StrEnum):
    CREATED = "created"  # between actions (or never started)
    STARTING = "starting"  # init_params of the current action is being called
    RUNNING = "running"  # execute of the current action is being called
    RECOVERING = "recovering"  # change_params_on_error is being called
    PAUSED = "paused"  # execute returned False: resume with execute
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


class ActionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self not in (ActionStatus.PENDING, ActionStatus.ACTIVE)


TERMINAL = frozenset({TaskStatus.FINISHED, TaskStatus.FAILED, TaskStatus.CANCELLED})
ACTIVE_STATUSES = frozenset(s for s in TaskStatus if s not in TERMINAL)


TYPE_ORDER = {TaskType.INTERACTIVE: 0, TaskType.CRON: 1}
STATUS_ORDER = {
    TaskStatus.STARTING: 0,
    TaskStatus.RECOVERING: 1,
    TaskStatus.RUNNING: 2,
    TaskStatus.PAUSED: 3,
    TaskStatus.CREATED: 4,
}


def run_order(type_: str, status: str) -> int | None:
    """The key the run sorts waiting tasks by; None for a task that will never run again.

    Interactive before cron; within a type, a task that died or paused before new work.
    """
    rank = STATUS_ORDER.get(TaskStatus(status))
    if rank is None:
        return None
    return TYPE_ORDER[TaskType(type_)] * 10 + rank


@dataclass(frozen=True, slots=True)
class NewAction:
    """An action to enqueue: a `module:Class` ref and its initial params."""

    ref: str
    params: dict[str, Any] = field(default_factory=dict)


class Enqueued(NamedTuple):
    """What `Client.enqueue_unique` did: the id of the task that holds the key, and
    whether this call created it (False: a task with that key had not ended yet)."""

    id: int
    created: bool


@dataclass(frozen=True, slots=True)
class Progress:
    """How far an action is, as it last reported with `Action.progress()`."""

    done: float
    total: float | None = None
    message: str | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total or self.total <= 0:
            return None
        return max(0.0, min(1.0, self.done / self.total))


@dataclass(frozen=True, slots=True)
class ActionRecord:
    """One persisted action of a task."""

    id: int
    task_id: int
    rank: int
    ref: str
    status: ActionStatus
    attempts: int
    params: dict[str, Any]
    started_at: datetime | None = None
    ended_at: datetime | None = None
    progress: Progress | None = None
    elapsed: float = 0.0  # seconds spent in execute, over every run
    last_failure: str | None = None  # why the last execute died (crash, overrun, exception)

    def eta(self) -> float | None:
        """Seconds of execute time still needed, from this action's own rate so far."""
        p = self.progress
        if p is None or p.fraction is None or p.done <= 0 or self.elapsed <= 0:
            return None
        return (p.total - p.done) * self.elapsed / p.done  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Task:
    """A persisted task with its ordered actions.

    `actions` holds every action of the task unless `action_count` is set: then it
    holds some of them only (a listing's: the current, the first unfinished and the
    first failed action; `show --actions N`'s: the first N and the current one), by
    rank, and `action_count` says how many the task has (see `total_actions`)."""

    id: int
    name: str
    type: TaskType
    queue: str
    status: TaskStatus
    current_rank: int | None
    last_run_id: str | None
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    actions: tuple[ActionRecord, ...] = ()
    cancel_requested_at: datetime | None = None
    claimed_by: str | None = None  # the worker that last claimed it (lock = "none")
    claim_token: int = 0  # grows with every claim: fences off the writes of older ones
    lease_until: datetime | None = None  # a claim older than this may be taken over
    not_before: datetime | None = None  # not due before then (delayed, snoozed, backoff)
    unique_key: str | None = None  # its unique key, while it has not ended
    action_count: int | None = None  # None: `actions` holds them all

    @property
    def total_actions(self) -> int:
        """How many actions the task has, whether `actions` holds them all or not."""
        return len(self.actions) if self.action_count is None else self.action_count

    @property
    def current_action(self) -> ActionRecord | None:
        for action in self.actions:
            if action.rank == self.current_rank:
                return action
        return None


@dataclass(frozen=True, slots=True)
class TaskState:
    """What `list` says of a task (bgtaskex.taskstate): its state in plain words
    (`text`) and the facts behind them.

    kind: finished, failed, cancelled, cancel_requested, executing (a run is in one of
    its hooks now), died (a hook died and no run holds the task), snoozed, delayed,
    paused, due, waiting_for_module, queue_paused (an operator paused its queue: no run
    takes it); unknown for a status this release does not know.
    """

    kind: str
    text: str
    action: ActionRecord | None = None  # the failed action, or the one a run takes next
    attempts: int = 0  # its deaths of execute, with one the next run has still to count
    max_attempts: int | None = None  # deaths of execute the action may have
    at: datetime | None = None  # when it is due again (retry, snooze, delay)
    module: str | None = None  # the module it waits for (waiting_for_module)


@dataclass(frozen=True, slots=True)
class Event:
    """One transition in the history of a task."""

    id: int
    task_id: int
    at: datetime
    run_id: str | None
    rank: int | None  # the action it is about, None for the task itself
    old_status: str | None
    new_status: str | None
    message: str
    error: str | None = None  # traceback text, when a hook raised


@dataclass(frozen=True, slots=True)
class NewEvent:
    rank: int | None
    old_status: str | None
    new_status: str | None
    message: str = ""
    error: str | None = None

    @property
    def routine(self) -> bool:
        """A task or an action moving on to a status other than failed, with no error:
        what `history = "failures"` leaves out of the history. Deaths, retries, overruns
        and hook errors (no status change, or an error) and notes are not routine, nor
        is a task entering recovering: only a death found by the next run leads there
        (a crash, with no other event of its own)."""
        moved = self.new_status is not None and self.new_status != self.old_status
        kept = (TaskStatus.FAILED.value, TaskStatus.RECOVERING.value)  # an action's "failed" too
        return moved and self.error is None and self.new_status not in kept


@dataclass(frozen=True, slots=True)
class ActionChange:
    """New values for one action of a task; None leaves a field as it is."""

    rank: int
    status: ActionStatus | None = None
    params: dict[str, Any] | None = None
    attempts: int | None = None
    progress: Progress | None = None
    elapsed: float = 0.0  # seconds of execute to add to the action's total
    last_failure: str | None = None  # why execute died; "" clears it


@dataclass(frozen=True, slots=True)
class Change:
    """One state change of a task, written by the store in one transaction."""

    task_id: int
    run_id: str
    status: TaskStatus | None = None
    current_rank: int | None = None
    actions: tuple[ActionChange, ...] = ()
    events: tuple[NewEvent, ...] = ()
    #: the writer's claim token: the write is refused (ClaimLost) once another run
    #: has claimed the task since. None: no claim.
    token: int | None = None
    #: end the claim with this write: the task may be claimed again at once
    release: bool = False
    #: take the claim with this write, as this worker, for `lease` seconds: `token` is
    #: the token read with the task, and the write is refused (ClaimLost) when the task
    #: was claimed since or another run's lease on it is still alive
    claim_as: str | None = None
    lease: float = 0.0
    #: not due before then (a retry's backoff, a snooze); a change with a status and
    #: none clears it
    not_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskFilter:
    """Which tasks a command is about; every field narrows, None means any."""

    statuses: frozenset[str] | None = None
    types: frozenset[str] | None = None
    queues: frozenset[str] | None = None
    name_glob: str | None = None  # shell-style: * and ?, case-insensitive
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before
    ended_before: datetime | None = None  # for purge --older-than


@dataclass(frozen=True, slots=True)
class TaskPage:
    """A page of the tasks a filter selects, newest first (`Client.page_tasks`)."""

    tasks: tuple[Task, ...]  # at most `limit`, newest first (id descending)
    total: int  # how many tasks the filter selects, counted up to count_up_to
    total_is_lower_bound: bool  # True when the count stopped (count_up_to, or searched)
    next_before: int | None  # pass as before_id for the next page; None on the last page
    # A filter checked task by task (a name glob, a time range read in id order) reads
    # at most store.pages.SCAN_BUDGET tasks for a page and as many for its count:
    # `searched_to` is the lowest id this page searched when it stopped there with
    # fewer than `limit` tasks (the next page searches on below it), and
    # `count_searched` the tasks the count read when it stopped there (`total` is then
    # how many of those match, a lower bound).
    searched_to: int | None = None
    count_searched: int | None = None


@dataclass(frozen=True, slots=True)
class HourActivity:
    """Actions that ended in one hour (`Client.activity`)."""

    hour: datetime  # start of the hour, UTC aware
    done: int  # actions that ended done in that hour
    failed: int  # actions that ended failed (or were given up) in that hour


@dataclass(frozen=True, slots=True)
class BulkResult:
    """What a bulk cancel or retry did (`Client.cancel_where`, `Client.retry_where`)."""

    matched: int  # tasks the filter selected when the command ran
    changed: int  # tasks actually cancelled / put back
    pending: int  # cancel only: tasks being executed, cancelled at their next checkpoint
    refused: tuple[tuple[int, str], ...]  # (task id, why) for the tasks the rules refuse


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts for `bgtaskex stats` and the Prometheus metrics."""

    counts: tuple[tuple[str, str, str, int], ...]  # (queue, type, status, tasks)
    oldest_waiting: datetime | None
    actions_ended: tuple[tuple[str, str, int], ...]  # (window, status, count)
    mean_action_seconds: float | None  # execute time of actions done in the last day
    paused: tuple[QueuePause, ...] = ()  # the queues an operator paused, by name
    last_ok_run_end: datetime | None = None  # the end of the last run that ended ok
    runs: tuple[tuple[str, int], ...] = ()  # (outcome, run records kept), "died" told


@dataclass(frozen=True, slots=True)
class QueuePause:
    """A queue an operator paused (`bgtaskex pause`): no run takes a task of it."""

    queue: str
    paused_at: datetime
    reason: str | None = None
    paused_by: str | None = None  # user@host


@dataclass(frozen=True, slots=True)
class QueueSummary:
    """One queue as `bgtaskex queues` shows it: its tasks by state and its pause."""

    queue: str
    waiting: int = 0  # not ended and not executing: created or paused
    running: int = 0  # starting, running or recovering (executing, or died there)
    failed: int = 0
    oldest_waiting_id: int | None = None  # the first waiting task, by id
    oldest_waiting_at: datetime | None = None  # ...and when it was created
    pause: QueuePause | None = None  # None: not paused


#: What a run counts, added up over its workers and kept in its record (`bgtaskex runs`).
RUN_COUNTS = (
    "finished",
    "paused",
    "failed",
    "errors",
    "cancelled",
    "lost",
    "actions",
    "left_waiting",
)


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What one run did."""

    run_id: str
    finished: int = 0
    paused: int = 0
    failed: int = 0
    errors: int = 0  # tasks left for the next run by a hook that raised
    cancelled: int = 0
    lost: int = 0  # tasks whose claim another worker took over meanwhile (lock = "none")
    actions: int = 0  # hook calls of execute
    elapsed: float = 0.0
    budget: float = 0.0
    lock_wait: float = 0.0
    purged: int = 0
    started_at: datetime | None = None
    left_waiting: int = 0  # tasks left as they were: their action's module cannot be imported
    missing_modules: tuple[str, ...] = ()  # those modules, sorted
    max_overrun: float = 0.0  # the longest a hook ran past the deadline, in seconds

    @property
    def idle(self) -> bool:
        """The run found nothing to do: no task taken, nothing purged."""
        counts = (self.finished, self.paused, self.failed, self.errors, self.cancelled)
        others = (self.lost, self.actions, self.purged, self.left_waiting)
        return not any(counts) and not any(others)

    @property
    def progressed(self) -> bool:
        """The run moved a task on (a hook called, a task ended or taken over) or purged
        one: more than leaving tasks waiting for a module it cannot import."""
        counts = (self.finished, self.paused, self.failed, self.errors, self.cancelled)
        return any(counts) or any((self.lost, self.actions, self.purged))

    def line(self) -> str:
        extra = f", {self.cancelled} cancelled" if self.cancelled else ""
        extra += f", {self.lost} lost" if self.lost else ""
        extra += f", {self.purged} purged" if self.purged else ""
        if self.left_waiting:
            extra += f", {self.left_waiting} left waiting (cannot import "
            extra += f"{', '.join(self.missing_modules)})"
        if self.max_overrun > 0:
            extra += f", overran the deadline by {self.max_overrun:.2f}s"
        return (
            f"run {self.run_id}: {self.finished} finished, {self.paused} paused, "
            f"{self.failed} failed, {self.errors} errored{extra}, {self.actions} actions run "
            f"in {self.elapsed:.2f}s"
        )


#: A run's outcome (`bgtaskex runs`): "running" is stored while it goes on, and stays
#: when it was killed; readers show such a run as "died" (`RunRecord.died`). "refused":
#: a run-once that refused to start (exit 2: a declared module that cannot be imported,
#: a pythonpath directory missing), recorded in one row as it ended.
RUN_OUTCOMES = ("ok", "failed", "storage", "running", "died", "refused")
#: The process name `bgtaskex demo` records its runs with: `check` does not count them
#: as runs to expect more of (a try of the demo is no cron that stopped).
DEMO_PROCESS = "demo"


@dataclass(frozen=True, slots=True)
class RunStart:
    """What a run records as it starts (`RunStorage.run_started`)."""

    run_id: str
    process: str | None  # the scheduled process; None: a plain run-once
    holder: str  # `owner.holder_name()/run_id`: tells whether it is alive
    host: str
    pid: int
    lock: str
    started_at: datetime
    budget: float


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One row of the record of runs (`bgtaskex runs`)."""

    id: int
    run_id: str
    process: str | None
    holder: str
    host: str
    pid: int
    lock: str
    started_at: datetime
    ended_at: datetime | None
    budget: float
    outcome: str  # one of RUN_OUTCOMES
    finished: int = 0
    paused: int = 0
    failed: int = 0
    errors: int = 0
    cancelled: int = 0
    lost: int = 0
    actions: int = 0
    left_waiting: int = 0
    purged: int = 0
    max_overrun: float = 0.0
    error: str | None = None  # masked: what ended the run, if not its end

    def died(self, grace: float | None, now: datetime) -> bool:
        """Whether a run stored as "running" is over without having said so (killed:
        exit 7, SIGKILL, a crash): its process is certainly gone (`holder_is_gone`), or
        it started longer ago than its budget plus `grace` (None: only the first)."""
        from .owner import holder_is_gone

        if self.outcome != "running":
            return False
        if holder_is_gone(self.holder):
            return True
        age = (now - self.started_at).total_seconds()
        return grace is not None and age > self.budget + grace

    def shown(self, grace: float | None, now: datetime) -> RunRecord:
        """The record as readers show it: outcome "died" for a run that `died`."""
        return replace(self, outcome="died") if self.died(grace, now) else self
