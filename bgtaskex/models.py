"""Immutable value objects that cross the storage boundary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


class TaskType(StrEnum):
    INTERACTIVE = "interactive"  # a user is waiting: processed first
    CRON = "cron"


class TaskStatus(StrEnum):
    CREATED = "created"  # between actions (or never started)
    STARTING = "starting"  # init_params of the current action is being called
    RUNNING = "running"  # execute of the current action is being called
    RECOVERING = "recovering"  # change_params_on_error is being called
    PAUSED = "paused"  # execute returned False: resume with execute
    FINISHED = "finished"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.FINISHED, TaskStatus.FAILED)


class ActionStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    DONE = "done"
    SKIPPED = "skipped"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in (ActionStatus.DONE, ActionStatus.SKIPPED, ActionStatus.FAILED)


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


@dataclass(frozen=True, slots=True)
class Task:
    """A persisted task with its ordered actions."""

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

    @property
    def current_action(self) -> ActionRecord | None:
        for action in self.actions:
            if action.rank == self.current_rank:
                return action
        return None


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


@dataclass(frozen=True, slots=True)
class ActionChange:
    """New values for one action of a task; None leaves a field as it is."""

    rank: int
    status: ActionStatus | None = None
    params: dict[str, Any] | None = None
    attempts: int | None = None


@dataclass(frozen=True, slots=True)
class Change:
    """One state change of a task, written by the store in one transaction."""

    task_id: int
    run_id: str
    status: TaskStatus | None = None
    current_rank: int | None = None
    actions: tuple[ActionChange, ...] = ()
    events: tuple[NewEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What one run did."""

    run_id: str
    finished: int = 0
    paused: int = 0
    failed: int = 0
    errors: int = 0  # tasks left for the next run by a hook that raised
    actions: int = 0  # hook calls of execute
    elapsed: float = 0.0
    idle: bool = False

    def line(self) -> str:
        return (
            f"run {self.run_id}: {self.finished} finished, {self.paused} paused, "
            f"{self.failed} failed, {self.errors} errored, {self.actions} actions run "
            f"in {self.elapsed:.2f}s"
        )
