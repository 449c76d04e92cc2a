"""What an action may do with the run while a hook runs: checkpoints, notes, progress,
and whether to stop (`Action.checkpoint`, `note`, `progress`, `should_stop`)."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..action import Cancelled
from ..config import params_problem
from ..exceptions import ClaimLost, DatabaseUnavailable, StorageError, TaskInterrupted
from ..models import ActionChange, Change, NewEvent, Progress, Task

if TYPE_CHECKING:
    from ..config import Settings
    from .machine import Machine


def jsonable(params: Any, hook: str, max_bytes: int | None = None) -> dict[str, Any]:
    """A deep copy of params through JSON, so what is saved is exactly what loads back;
    no bigger than `max_bytes` (its UTF-8 JSON)."""
    if not isinstance(params, dict):
        raise TypeError(f"{hook} left params as {type(params).__name__}; expected a dict")
    try:
        encoded = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{hook} left params that are not JSON: {err}") from None
    if max_bytes is not None and len(encoded) > max_bytes:  # ASCII: one byte a character
        raise ValueError(
            f"{hook} left params of {len(encoded):,} bytes of JSON, over "
            f"max_params_bytes ({max_bytes:,})"
        )
    loaded = json.loads(encoded)
    problem = params_problem(loaded)
    if problem is not None:  # the run's flush would fail in the database at every run
        raise ValueError(f"{hook} left params that cannot be stored: {problem}")
    return loaded  # type: ignore[no-any-return]


class RunContext:
    """The `ActionContext` of one action instance in a run. A checkpoint or a note is
    written at once, on its own, fenced by the claim's token."""

    def __init__(self, machine: Machine, task: Task, rank: int) -> None:
        self.machine = machine
        self.task = task
        self.rank = rank
        self.saved_at = time.monotonic()  # the execute time not yet added to `elapsed`
        #: the run's own write that failed inside the hook (a checkpoint, a note): a
        #: storage outage, not the action's fault
        self.storage_failed: StorageError | None = None

    def busy_since_save(self) -> float:
        now = time.monotonic()
        busy, self.saved_at = now - self.saved_at, now
        return busy

    def checkpoint(self, params: dict[str, Any], progress: Progress | None) -> None:
        machine, hold = self.machine, self.machine.hold
        saved = jsonable(params, "checkpoint", machine.settings.max_params_bytes)
        change = ActionChange(
            self.rank, params=saved, progress=progress, elapsed=self.busy_since_save()
        )
        try:
            machine.store.apply(
                Change(self.task.id, machine.run_id, actions=(change,), token=hold.token)
            )
        except DatabaseUnavailable as err:
            self.storage_failed = err
            raise
        except TaskInterrupted:
            machine.store.end_cancelled(self.task.id, machine.run_id, self.rank, saved)
            raise Cancelled(f"task {self.task.id} was cancelled") from None
        except ClaimLost as lost:
            raise hold.lose(lost) from None

    def report(self, progress: Progress) -> None:
        self.machine.observer.progress(self.task, self.rank, progress)

    def should_stop(self) -> bool:
        return self.machine.stop_requested()

    def note(self, message: str) -> None:
        machine, hold = self.machine, self.machine.hold
        event = NewEvent(self.rank, None, None, message)
        try:
            machine.store.apply(
                Change(self.task.id, machine.run_id, events=(event,), token=hold.token)
            )
        except ClaimLost as lost:
            raise hold.lose(lost) from None

    @property
    def settings(self) -> Settings:
        return self.machine.settings
