"""The state machine of one task (docs/semantics.md, the README's tables).

Each status is staged, and written (committed), *before* the hook it announces is
called, so whatever kills the process leaves the status that tells the next run what
happened. A task is taken from the status it was found in (`Machine.advance`):

| found        | meaning                        | the run                                       |
|--------------|--------------------------------|-----------------------------------------------|
| `created`    | between actions                | the next pending action, or the task's end    |
| `starting`   | `init_params` died             | the action fails; the next action             |
| `running`    | `execute` died                 | a death: `change_params_on_error`, `execute`  |
| `recovering` | `change_params_on_error` died  | the action fails; the next action             |
| `paused`     | `execute` returned False       | `execute` again                               |
| anything else| corrupt                        | logged, the task fails                        |

then action after action in a loop (a chain of any length runs in constant stack) until
the task ends, pauses, a hook raises, or the deadline or a stop comes between actions.
A pause of the task's queue (`bgtaskex pause`) is looked for before every hook that a
run starts after another: before each next action, and before `execute` when
`init_params` or `change_params_on_error` came first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from ..action import Action
from ..config import Settings
from ..exceptions import InvalidRef, ModuleUnavailable
from ..models import ActionRecord, ActionStatus, NewEvent, Task, TaskStatus
from ..registry import Registry
from ..store.contract import RunStorage
from .batch import TaskWrites, WriteBatch
from .claims import Heartbeat, Hold
from .context import RunContext
from .failures import CRASH, STORAGE, not_before, retry_delay
from .hooks import HookDied, Hooks
from .observer import Outcome, RunObserver
from .pauses import PauseWatch

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters

#: What a step returns: how the task was left, or None when the next action is due.
Step = Outcome | None


class Machine:
    """Takes tasks through their statuses for one worker, staging every write in `batch`
    and writing it before each hook."""

    def __init__(
        self,
        store: RunStorage,
        registry: Registry,
        settings: Settings,
        *,
        run_id: str,
        deadline: float,
        batch: WriteBatch,
        hold: Hold,
        heartbeat: Heartbeat | None,
        observer: RunObserver,
        stop_requested: Callable[[], bool],
    ) -> None:
        self.store, self.registry, self.settings = store, registry, settings
        self.run_id, self.deadline = run_id, deadline
        self.batch, self.hold = batch, hold
        self.observer, self.stop_requested = observer, stop_requested
        self.actions_run = 0
        self.missing_modules: set[str] = set()
        self.hooks = Hooks(
            store,
            settings,
            run_id=run_id,
            deadline=deadline,
            batch=batch,
            hold=hold,
            heartbeat=heartbeat,
        )
        self.pauses = PauseWatch(store)

    def advance(self, task: Task) -> Outcome:
        """Take `task` (just picked: its queue was not paused) from the status it was
        found in as far as this run allows."""
        self.pauses.picked(task.queue)
        work = TaskWrites.of(task)
        log.debug("run %s: task %s (%s): found %s", self.run_id, task.id, task.name, task.status)
        if task.cancel_requested_at is not None:  # asked while a run held the lock
            self.batch.flush()
            self.store.end_cancelled(task.id, self.run_id, None, None)
            return Outcome.CANCELLED
        outcome = self._resume(work)
        while outcome is None:
            outcome = self._start_next(work)
        return outcome

    def _resume(self, work: TaskWrites) -> Step:
        """The step of the status the task was found in."""
        task = work.task
        current = None if task.status == TaskStatus.CREATED else task.current_action
        match task.status:
            case TaskStatus.CREATED:
                return None  # between actions: the next one is due
            case TaskStatus.STARTING if current is not None:
                message = "init_params died in an earlier run"
                work.stage(current.rank, ActionStatus.FAILED, message=message)
                return None
            case TaskStatus.RUNNING if current is not None:
                return self._after_death(work, current)
            case TaskStatus.RECOVERING if current is not None:
                message = "change_params_on_error died in an earlier run"
                work.stage(current.rank, ActionStatus.FAILED, message=message)
                return None
            case TaskStatus.PAUSED if current is not None:
                instance = self._instantiate(work, current)
                if not isinstance(instance, Action):
                    return instance
                return self._execute(work, current.rank, instance)
            case status:
                return self._corrupt(
                    work, f"status {status!r} with current action {task.current_rank}"
                )

    def _after_death(self, work: TaskWrites, current: ActionRecord) -> Step:
        """`running` found: execute died in an earlier run. Count the death; past
        max_attempts the action fails, else change_params_on_error (if overridden) and
        execute again: at once when the death was recorded (an exception, an overrun:
        its retry delay was set with it), else (a crash) after the retry delay."""
        instance = self._instantiate(work, current)
        if not isinstance(instance, Action):
            return instance
        rank = current.rank
        if (current.last_failure or "").startswith(STORAGE):  # not the action's fault
            died = f"execute was ended by a storage outage ({current.last_failure}): no death"
            work.events.append(NewEvent(rank, work.status, work.status, died))
            return self._execute(work, rank, instance)
        attempts = current.attempts + 1
        recorded = current.last_failure is not None
        instance.last_failure = current.last_failure or CRASH
        failure = None if recorded else CRASH
        limit = self.hooks.max_attempts(instance)
        if attempts >= limit:
            message = f"execute died {attempts} times (max_attempts={limit})"
            work.stage(
                rank, ActionStatus.FAILED, attempts=attempts, message=message, last_failure=failure
            )
            return None
        work.stage(rank, attempts=attempts, last_failure=failure)
        work.counted[rank] = attempts
        delay = 0.0 if recorded else retry_delay(type(instance), self.settings, attempts)
        died = f"execute died in an earlier run (death {attempts}): {instance.last_failure}"
        if not type(instance).overrides_change_params_on_error():
            # Nothing can die in the default hook (retry as is): straight to execute.
            # The task stays `running`: a row of that status (None, None is a note's).
            event = NewEvent(rank, work.status, work.status, f"{died}; retrying it as is")
            work.events.append(event)
            return self._retry(work, rank, instance, delay)
        self.batch.stage_status(
            work, TaskStatus.RECOVERING, f"{died}; calling change_params_on_error"
        )
        try:
            retry = self.hooks.call(
                work, rank, instance, "change_params_on_error", instance.change_params_on_error
            )
        except HookDied:
            return Outcome.ERROR
        if not retry:
            message = "change_params_on_error gave up (returned False)"
            work.stage(rank, ActionStatus.FAILED, message=message)
            return None
        return self._retry(work, rank, instance, delay)

    def _retry(self, work: TaskWrites, rank: int, instance: Action, delay: float) -> Step:
        """Execute again after a death: now, or `paused` until the retry delay is over
        (the death is counted: the next run goes straight to execute)."""
        if delay <= 0:
            return self._execute(work, rank, instance)
        message = f"execute of action {rank} is tried again in {delay:.1f}s (retry_delay)"
        self.batch.stage_status(work, TaskStatus.PAUSED, message, not_before=not_before(delay))
        return Outcome.PAUSED

    def _start_next(self, work: TaskWrites) -> Step:
        """Between actions: end the task when no action is left; stop here when the
        deadline has come or a stop is asked; else start the next pending action."""
        rank = work.next_pending()
        if rank is None:
            final = TaskStatus.FAILED if work.any_failed() else TaskStatus.FINISHED
            self.batch.stage_status(work, final, f"no action left: task {final}")
            return Outcome.FAILED if final is TaskStatus.FAILED else Outcome.FINISHED
        if time.time() >= self.deadline or self.stop_requested():
            why = "stop requested" if self.stop_requested() else "deadline reached"
            self.batch.stage_status(work, TaskStatus.CREATED, f"{why} before action {rank}")
            return Outcome.DEFERRED
        if self.pauses.paused(work.task.queue):
            why = f"queue {work.task.queue} paused before action {rank}"
            log.info("run %s: task %s (%s): %s", self.run_id, work.task.id, work.task.name, why)
            self.batch.stage_status(work, TaskStatus.CREATED, why)
            return Outcome.DEFERRED
        instance = self._instantiate(work, work.actions[rank])
        if not isinstance(instance, Action):
            return instance
        if type(instance).overrides_init_params():
            work.stage(rank, ActionStatus.ACTIVE)
            self.batch.stage_status(
                work, TaskStatus.STARTING, f"calling init_params of action {rank}", rank
            )
            try:
                wanted = self.hooks.call(work, rank, instance, "init_params", instance.init_params)
            except HookDied:
                return Outcome.ERROR
            if not wanted:
                message = "init_params returned False: nothing to do"
                work.stage(rank, ActionStatus.SKIPPED, message=message)
                return None
        return self._execute(work, rank, instance)

    def _execute(self, work: TaskWrites, rank: int, instance: Action) -> Step:
        """`running`, then execute: None when it returned True (the action is done)."""
        if work.status in (TaskStatus.STARTING, TaskStatus.RECOVERING):
            # Asked to stop, or the queue paused, while init_params or
            # change_params_on_error ran: what they left is saved, and `paused` sends the
            # next run (once the queue is resumed) straight to execute.
            why = None
            if self.stop_requested():
                why = f"stop requested before execute of {rank}"
            elif self.pauses.paused(work.task.queue):
                why = f"queue {work.task.queue} paused before execute of action {rank}"
                log.info("run %s: task %s (%s): %s", self.run_id, work.task.id, work.task.name, why)
            if why is not None:
                self.batch.stage_status(work, TaskStatus.PAUSED, why)
                return Outcome.PAUSED
        if rank in work.counted or work.actions[rank].last_failure is not None:
            work.stage(rank, ActionStatus.ACTIVE, last_failure="")  # recorded anew if it dies
        else:
            work.stage(rank, ActionStatus.ACTIVE)
        self.batch.stage_status(work, TaskStatus.RUNNING, f"calling execute of action {rank}", rank)
        self.actions_run += 1
        deadline = self.deadline
        try:
            done = self.hooks.call(
                work, rank, instance, "execute", lambda: instance.execute(deadline)
            )
        except HookDied:
            return Outcome.ERROR
        if done:
            work.stage(rank, ActionStatus.DONE, message="execute returned True")
            return None
        snoozed, instance._snooze_until = instance._snooze_until, None
        if snoozed is not None:  # `return self.snooze(seconds)`: no attempt counted
            delay = max(0.0, snoozed - time.time())
            message = f"execute of action {rank} snoozed for {delay:.1f}s"
            self.batch.stage_status(work, TaskStatus.PAUSED, message, not_before=not_before(delay))
            return Outcome.PAUSED
        self.batch.stage_status(work, TaskStatus.PAUSED, f"execute of action {rank} returned False")
        return Outcome.PAUSED

    def _corrupt(self, work: TaskWrites, what: str) -> Outcome:
        task = work.task
        log.error(
            "run %s: task %s (%s): corrupt state: %s; failing it",
            self.run_id,
            task.id,
            task.name,
            what,
        )
        self.batch.stage_status(work, TaskStatus.FAILED, f"corrupt state: {what}")
        return Outcome.FAILED

    # -- an action (its hooks are called by hooks.Hooks) ----------------------------

    def _instantiate(self, work: TaskWrites, record: ActionRecord) -> Action | Step:
        """The action object; None after staging the action as failed (a ref that can
        never work); Outcome.LEFT when its module cannot be imported here, which is a
        deploy slip, not the task's fault: the task is left as it was."""
        if not self.registry.resolved(record.ref):
            self.batch.flush(work.task.id)  # importing the module runs user code
        try:
            cls = self.registry.resolve(record.ref)
            if not isinstance(record.params, dict):
                raise InvalidRef(f"stored params of action {record.rank} are not a JSON object")
        except ModuleUnavailable as err:
            return self._leave(work, record, err)
        except InvalidRef as err:
            log.error(
                "run %s: task %s: action %s (%s) failed: %s",
                self.run_id,
                work.task.id,
                record.rank,
                record.ref,
                err,
            )
            work.stage(record.rank, ActionStatus.FAILED, message=str(err))
            return None
        instance = cls(dict(record.params), context=RunContext(self, work.task, record.rank))
        instance.last_failure = record.last_failure
        return instance

    def _leave(self, work: TaskWrites, record: ActionRecord, err: ModuleUnavailable) -> Outcome:
        """Leave a task whose action's module cannot be imported as it was (status and
        attempts), keeping what this run already did (earlier actions of the chain)."""
        if err.module not in self.missing_modules:
            self.missing_modules.add(err.module)
            log.error(
                "run %s: %s; tasks that need it are left waiting (declare it with "
                "--import %s, the config's imports or BGTASKEX_IMPORTS, and check "
                "the config's pythonpath)",
                self.run_id,
                err,
                err.module,
            )
        log.info(
            "run %s: task %s (%s) left waiting: action %s needs module %s",
            self.run_id,
            work.task.id,
            work.task.name,
            record.rank,
            err.module,
        )
        if work.staged or work.events:  # earlier actions of the chain ended in this run
            message = f"action {record.rank} waits for its module"
            self.batch.stage_status(work, TaskStatus.CREATED, message)
        return Outcome.LEFT
