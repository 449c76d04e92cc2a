"""How the state machine calls a hook of an action (`Machine.hooks`, a `Hooks`).

Before the hook, what announces it is written (the batch's flush), the claim's heartbeat
holds the task and the hook's hard limit is set (`failures.Overrun`); after it, the
params, progress and execute time it left are staged; if it raises (or returns what is
not a bool, or leaves params that are not JSON), its error event is staged, with why
execute died and when to try it again, and `HookDied` tells the machine.
"""

from __future__ import annotations

import functools
import logging
import time
import traceback
from collections.abc import Callable

from ..action import Action
from ..config import Settings
from ..models import ActionChange, NewEvent
from ..store.contract import RunStorage
from .batch import TaskWrites, WriteBatch
from .claims import Heartbeat, Hold
from .context import RunContext, jsonable
from .failures import Overrun, failure_text, not_before, retry_delay

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters


class HookDied(Exception):
    """A hook raised; its error event is already staged."""


class Hooks:
    """The calls of an action's hooks, for one worker's `Machine`."""

    def __init__(
        self,
        store: RunStorage,
        settings: Settings,
        *,
        run_id: str,
        deadline: float,
        batch: WriteBatch,
        hold: Hold,
        heartbeat: Heartbeat | None,
    ) -> None:
        self.store, self.settings = store, settings
        self.run_id, self.deadline = run_id, deadline
        self.batch, self.hold, self.heartbeat = batch, hold, heartbeat
        #: The longest a hook ran past the deadline in this run, in seconds.
        self.max_overrun = 0.0

    def max_attempts(self, instance: Action) -> int:
        return type(instance).max_attempts or self.settings.max_attempts

    def next_delay(self, work: TaskWrites, rank: int, instance: Action) -> float:
        """The retry delay if the execute about to run dies: none when that death
        fails the action (max_attempts)."""
        death = work.counted.get(rank, work.actions[rank].attempts) + 1
        if death >= self.max_attempts(instance):
            return 0.0
        return retry_delay(type(instance), self.settings, death)

    def call(
        self, work: TaskWrites, rank: int, instance: Action, name: str, call: Callable[[], object]
    ) -> bool:
        """Write what announces the hook, call it; on a normal return, stage the params
        (and progress, and execute time) it left, and return its result.

        If it raises, returns a non-bool or leaves params that are not JSON, stage the
        error and raise HookDied: the task stays in its status for the next run to
        recover.
        """
        self.batch.flush(work.task.id)  # what announces this hook is durable before it runs
        hold, heartbeat = self.hold, self.heartbeat
        if heartbeat is not None and hold.claimed and hold.token is not None:
            heartbeat.hold(work.task.id, hold.token, hold.sent)
            overrun = self._overrun(work, rank, instance, name)
            if overrun is not None:
                heartbeat.limit(overrun.kill_at(), overrun.kill)
        context = instance._context
        if isinstance(context, RunContext):
            context.busy_since_save()
        try:
            try:
                result = call()
            finally:
                if heartbeat is not None:
                    heartbeat.limit(None)
                self._note_overrun(work, rank, name)
            if not isinstance(result, bool):
                raise TypeError(f"{name} must return True or False, not {result!r}")
            params = jsonable(instance.params, name, self.settings.max_params_bytes)
        except (Exception, SystemExit) as err:  # sys.exit() in a hook is a hook's error
            self._hook_died(work, rank, instance, name, err)
            raise HookDied from err
        elapsed = (
            context.busy_since_save()
            if name == "execute" and isinstance(context, RunContext)
            else 0.0
        )
        work.stage(rank, params=params, progress=instance._progress, elapsed=elapsed)
        return result

    def _overrun(self, work: TaskWrites, rank: int, instance: Action, name: str) -> Overrun | None:
        """The hard limit of this hook (None: `kill_after = "never"`)."""
        kill_after = self.settings.kill_after
        if kill_after is None:
            return None
        return Overrun(
            self.store,
            self.run_id,
            work.task.id,
            work.task.name,
            work.status,
            rank,
            work.actions[rank].ref,
            name,
            self.deadline,
            kill_after,
            self.hold.token,
            functools.partial(self.next_delay, work, rank, instance) if name == "execute" else None,
        )

    def _note_overrun(self, work: TaskWrites, rank: int, name: str) -> None:
        overrun = time.time() - self.deadline
        if overrun <= 0.5:  # the end of a slice, not an overrun
            return
        self.max_overrun = max(self.max_overrun, overrun)
        log.warning(
            "run %s: task %s (%s): %s of action %s (%s) overran the deadline by %.1fs",
            self.run_id,
            work.task.id,
            work.task.name,
            name,
            rank,
            work.actions[rank].ref,
            overrun,
        )

    def _hook_died(
        self, work: TaskWrites, rank: int, instance: Action, name: str, err: Exception | SystemExit
    ) -> None:
        log.warning(
            "run %s: task %s (%s): %s of action %s (%s) raised %s: %s",
            self.run_id,
            work.task.id,
            work.task.name,
            name,
            rank,
            work.actions[rank].ref,
            type(err).__name__,
            err,
            exc_info=True,
        )
        message = f"{name} raised {type(err).__name__}: {err}"
        event = NewEvent(rank, work.status, work.status, message, traceback.format_exc())
        if name != "execute":
            self.batch.stage_event(work.task.id, event)
            return
        # Why it died and when to try again go with the error event: no write of their own.
        context = instance._context
        storage = context.storage_failed if isinstance(context, RunContext) else None
        if storage is not None and not _caused_by(err, storage):
            storage = None  # caught by the action, which then failed of its own error
        delay = 0.0 if storage is not None else self.next_delay(work, rank, instance)
        failure = ActionChange(rank, last_failure=failure_text(err, storage))
        self.batch.stage_event(work.task.id, event, failure, not_before(delay))


def _caused_by(err: BaseException, cause: BaseException) -> bool:
    """Whether `cause` is `err` or in its chain (raised from it, or while handling it)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if current is cause:
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False
