"""One run: take the lock, compute the deadline, process tasks in order until the work
or the time runs out. `bgtaskex run-once`, a daemon tick and the tests all call `run()`.

The state machine of docs/semantics.md#the-state-machine: each status is committed *before*
the hook it announces is called, so whatever kills the process leaves the status that
tells the next run what happened.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import secrets
import signal
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..action import Action, Cancelled
from ..config import Settings
from ..exceptions import (
    ClaimLost,
    ConfigError,
    DatabaseUnavailable,
    InvalidRef,
    ModuleUnavailable,
    StorageError,
    TaskInterrupted,
)
from ..models import (
    ActionChange,
    ActionRecord,
    ActionStatus,
    Change,
    NewEvent,
    Progress,
    RunSummary,
    Task,
    TaskStatus,
)
from ..owner import process_name, running
from ..registry import Registry
from ..store.core import Store
from .claims import Claims, Heartbeat
from .file_lock import RunLock

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters


class Outcome(enum.Enum):
    FINISHED = "finished"
    FAILED = "failed"
    PAUSED = "paused"  # execute returned False
    DEFERRED = "deferred"  # between two actions when the deadline came
    ERROR = "error"  # a hook raised: left for the next run to recover
    CANCELLED = "cancelled"
    LOST = "lost"  # another run holds the claim (took it over, or was first): left to it
    LEFT = "left"  # its action's module cannot be imported: left as it was


_RESUMABLE = frozenset(
    {TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.RECOVERING, TaskStatus.PAUSED}
)


class _HookDied(Exception):
    """A hook raised; its error event is already written."""


def new_run_id() -> str:
    return secrets.token_hex(4)


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
    return json.loads(encoded)  # type: ignore[no-any-return]


@dataclass
class _Work:
    """What the runner knows of one task while processing it, and the writes it holds
    back to commit together with the next status change."""

    task: Task
    status: str
    actions: dict[int, ActionRecord]
    action_status: dict[int, ActionStatus]
    staged: dict[int, ActionChange] = field(default_factory=dict)
    events: list[NewEvent] = field(default_factory=list)
    order: list[int] | None = None  # the ranks, sorted (next_pending)
    cursor: int = 0

    @classmethod
    def of(cls, task: Task) -> _Work:
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
    ) -> None:
        old = self.staged.get(rank, ActionChange(rank))
        self.staged[rank] = ActionChange(
            rank,
            status=status or old.status,
            params=params if params is not None else old.params,
            attempts=attempts if attempts is not None else old.attempts,
            progress=progress or old.progress,
            elapsed=old.elapsed + elapsed,
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


class RunObserver:
    """Hooks for a live view of a run (`run-once --progress`); the default does nothing."""

    def task_started(self, task: Task) -> None:
        pass

    def progress(self, task: Task, rank: int, progress: Progress) -> None:
        pass

    def task_ended(self, task: Task, outcome: Outcome) -> None:
        pass


class _Context:
    """What one action instance may do with the run: checkpoints, progress, stop."""

    def __init__(self, runner: Runner, task: Task, rank: int) -> None:
        self.runner = runner
        self.task = task
        self.rank = rank
        self.saved_at = time.monotonic()  # the execute time not yet added to `elapsed`

    def busy_since_save(self) -> float:
        now = time.monotonic()
        busy, self.saved_at = now - self.saved_at, now
        return busy

    def checkpoint(self, params: dict[str, Any], progress: Progress | None) -> None:
        runner = self.runner
        saved = jsonable(params, "checkpoint", runner.settings.max_params_bytes)
        change = ActionChange(
            self.rank, params=saved, progress=progress, elapsed=self.busy_since_save()
        )
        try:
            runner.store.apply(
                Change(self.task.id, runner.run_id, actions=(change,), token=runner.token)
            )
        except TaskInterrupted:
            runner.store.end_cancelled(self.task.id, runner.run_id, self.rank, saved)
            raise Cancelled(f"task {self.task.id} was cancelled") from None
        except ClaimLost as lost:
            raise runner.lost_claim(lost) from None

    def report(self, progress: Progress) -> None:
        self.runner.observer.progress(self.task, self.rank, progress)

    def should_stop(self) -> bool:
        return self.runner.stop_requested

    def note(self, message: str) -> None:
        runner = self.runner
        event = NewEvent(self.rank, None, None, message)
        try:
            runner.store.apply(
                Change(self.task.id, runner.run_id, events=(event,), token=runner.token)
            )
        except ClaimLost as lost:
            raise runner.lost_claim(lost) from None

    @property
    def settings(self) -> Settings:
        return self.runner.settings


class Runner:
    """Processes tasks until none is due or the deadline has passed."""

    def __init__(
        self,
        store: Store,
        registry: Registry,
        *,
        deadline: float,
        max_attempts: int = 5,
        run_id: str | None = None,
        observer: RunObserver | None = None,
        queues: Collection[str] | None = None,
        exclude_queues: Collection[str] = (),
        stop: threading.Event | None = None,
        settings: Settings | None = None,
        claims: Claims | None = None,
        lock_alive: Callable[[], bool] | None = None,
        lock_lost: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.deadline = deadline
        self.max_attempts = max_attempts
        self.run_id = run_id or new_run_id()
        self.observer = observer or RunObserver()
        self.actions_run = 0
        self.queues = queues
        self.exclude_queues = exclude_queues
        self.stop = stop or threading.Event()
        self.settings = settings or Settings()
        self._pending: list[Change] = []  # written together right before the next hook
        self._unwritten: dict[int, Outcome] = {}  # tasks processed, whose last writes pend
        self._counts = dict.fromkeys(Outcome, 0)
        self.claims = claims
        self.token: int | None = None  # the claim token of the task held
        self._claim_from: int | None = None  # token read with the task, claim not staged
        self._claimed = False  # the claim of the task held is committed
        self._held: int | None = None  # the task held
        self._claim_sent = 0.0  # time.monotonic() before its claim went to the database
        self._lost = threading.Event()  # the claim of the task held was taken over
        self.lock_lost = lock_lost or threading.Event()
        self._heartbeat = (
            Heartbeat(store, claims.lease, lock_alive=lock_alive, lock_lost=self.lock_lost)
            if claims is not None
            else None
        )
        self.missing_modules: set[str] = set()
        self.max_overrun = 0.0

    @property
    def stop_requested(self) -> bool:
        """Stop asked (signal, daemon stopping), the run's lock is lost, or the claim of
        the task held is lost: finish the current hook, start nothing new."""
        return self.stop.is_set() or self.lock_lost.is_set() or self._lost.is_set()

    def lost_claim(self, lost: ClaimLost) -> Cancelled:
        """Note that the claim is lost; the Cancelled to raise in the action."""
        self._lost.set()
        return Cancelled(str(lost))

    def run(self) -> RunSummary:
        started = time.monotonic()
        broken: set[int] = set()  # tasks not to take again this run (errors, left, lost)
        counts = self._counts
        try:
            while not self._should_end():
                task = self._next(broken)
                if task is None:
                    break
                self.observer.task_started(task)
                if self.claims is None:
                    outcome = self._process_guarded(task, broken)
                else:
                    outcome = self._process_held(task, broken)
                if outcome in (Outcome.LEFT, Outcome.LOST):
                    broken.add(task.id)
                if any(change.task_id == task.id for change in self._pending):
                    self._unwritten[task.id] = outcome
                counts[outcome] += 1
                self.observer.task_ended(task, outcome)
            self._flush()
        except StorageError:
            # The last writes may still go through (a statement that failed once).
            with suppress(StorageError):
                self._flush()
            self._abandon()
            raise
        except BaseException:
            self._abandon()
            raise
        finally:
            if self._heartbeat is not None:
                self._heartbeat.close()
        return RunSummary(
            run_id=self.run_id,
            finished=counts[Outcome.FINISHED],
            paused=counts[Outcome.PAUSED] + counts[Outcome.DEFERRED],
            failed=counts[Outcome.FAILED],
            errors=counts[Outcome.ERROR],
            cancelled=counts[Outcome.CANCELLED],
            lost=counts[Outcome.LOST],
            actions=self.actions_run,
            elapsed=time.monotonic() - started,
            left_waiting=counts[Outcome.LEFT],
            missing_modules=tuple(sorted(self.missing_modules)),
            max_overrun=self.max_overrun,
        )

    def _abandon(self) -> None:
        """An error ends the run in the middle of a task: end its lease (its status
        stays), so the next run recovers it at once, as after a crash."""
        held, token = self._held, self.token
        if self._heartbeat is not None:
            self._heartbeat.drop()
        if held is not None and token is not None and self._claimed:
            with suppress(Exception):
                self.store.release(held, token)

    def _should_end(self) -> bool:
        """Time is up, a stop was asked, or the run's lock is gone (the heartbeat says
        so in the log)."""
        return time.time() >= self.deadline or self.stop.is_set() or self.lock_lost.is_set()

    def _next(self, broken: set[int]) -> Task | None:
        if self.claims is not None and self.claims.shared:
            self._flush()
            self._claim_sent = time.monotonic()
            return self.store.claim(
                self.claims.worker,
                self.run_id,
                self.claims.lease,
                exclude=broken,
                queues=self.queues,
                exclude_queues=self.exclude_queues,
            )
        # A task whose last writes still pend is not yet marked as this run's.
        unwritten = {change.task_id for change in self._pending}
        if len(unwritten) > 1:
            self._flush()
            unwritten.clear()
        return self.store.next_task(
            skip_run=self.run_id,
            skip_task=min(unwritten, default=None),
            exclude=broken,
            queues=self.queues,
            exclude_queues=self.exclude_queues,
        )

    def _process_held(self, task: Task, broken: set[int]) -> Outcome:
        """Process a task under a claim: taken before the read (shared) or with the
        task's first write, kept alive by the heartbeat, every write fenced by its
        token, and ended with the task's last write."""
        assert self.claims is not None and self._heartbeat is not None
        self._lost.clear()
        self._held = task.id
        if self.claims.shared:
            self.token, self._claim_from, self._claimed = task.claim_token, None, True
        else:
            self.token, self._claim_from, self._claimed = None, task.claim_token, False
        outcome = self._process_guarded(task, broken)
        self._heartbeat.drop()
        try:
            self._release(task.id)
        except ClaimLost as lost:
            outcome = self._lost_outcome(lost)
        except TaskInterrupted:
            self.store.end_cancelled(task.id, self.run_id, None, None)
            outcome = Outcome.CANCELLED
        self.token, self._claim_from, self._claimed, self._held = None, None, False, None
        return outcome

    def _release(self, task_id: int) -> None:
        """End the claim with the task's last write (if it still pends), else alone."""
        if self._lost.is_set() or self.token is None:
            return  # never claimed, or another run holds it now
        last = self._pending[-1] if self._pending else None
        if last is not None and last.task_id == task_id:
            self._pending[-1] = replace(last, release=True)
            if self.claims is not None and self.claims.shared:
                self._flush(task_id)
        elif self._claimed:
            self._flush(task_id)
            self.store.release(task_id, self.token)

    def _lost_outcome(self, lost: ClaimLost) -> Outcome:
        self._lost.set()
        log.warning("run %s: %s; its writes stop here", self.run_id, lost)
        return Outcome.LOST

    def _process_guarded(self, task: Task, broken: set[int]) -> Outcome:
        try:
            return self._process(task)
        except ClaimLost as lost:
            return self._lost_outcome(lost)
        except TaskInterrupted:  # cancelled (or ended) by someone else meanwhile
            self.store.end_cancelled(task.id, self.run_id, None, None)
            return Outcome.CANCELLED
        except Cancelled as stopped:  # raised by a checkpoint: the task was cancelled
            if self._lost.is_set():  # (the checkpoint ended it), or the claim was lost
                log.warning("run %s: %s; its writes stop here", self.run_id, stopped)
                return Outcome.LOST
            return Outcome.CANCELLED
        except StorageError:
            raise  # the database is gone: so is this run
        except Exception:
            # A bug or a corrupt row must not stop every run at this task.
            log.exception(
                "run %s: task %s: unexpected error; left for the next run", self.run_id, task.id
            )
            broken.add(task.id)
            self._flush()
            return Outcome.ERROR

    # -- the state machine ------------------------------------------------------------

    def process(self, task: Task) -> Outcome:
        """Take one task from the status it was found in as far as this run allows, and
        write all of it (the run itself leaves a task's last writes to go with the next
        task's first)."""
        outcome = self._process(task)
        self._flush(task.id)
        return outcome

    def _process(self, task: Task) -> Outcome:
        """The state machine, as a loop over the task's actions (a chain of any length
        runs in constant stack): each step returns an Outcome, or None when the current
        action is over and the next one is due."""
        work = _Work.of(task)
        log.debug("run %s: task %s (%s): found %s", self.run_id, task.id, task.name, task.status)
        if task.cancel_requested_at is not None:  # asked while a run held the lock
            self._flush()
            self.store.end_cancelled(task.id, self.run_id, None, None)
            return Outcome.CANCELLED
        outcome = self._resume(work)
        while outcome is None:
            outcome = self._start_next(work)
        return outcome

    def _resume(self, work: _Work) -> Outcome | None:
        """The step of a task found in the middle of an action."""
        task, status = work.task, work.task.status
        if status == TaskStatus.CREATED:
            return None
        current = task.current_action
        if current is None or status not in _RESUMABLE:
            return self._corrupt(work, f"status {status!r} with current action {task.current_rank}")
        rank = current.rank
        if status == TaskStatus.STARTING:
            work.stage(rank, ActionStatus.FAILED, message="init_params died in an earlier run")
            return None
        if status == TaskStatus.RECOVERING:
            work.stage(
                rank, ActionStatus.FAILED, message="change_params_on_error died in an earlier run"
            )
            return None
        instance = self._instantiate(work, current)
        if isinstance(instance, Outcome):
            return instance
        if instance is None:
            return None
        if status == TaskStatus.PAUSED:
            return self._execute(work, rank, instance)
        return self._recover(work, current, instance)

    def _recover(self, work: _Work, current: ActionRecord, instance: Action) -> Outcome | None:
        """`running` found: execute died in an earlier run."""
        rank = current.rank
        attempts = current.attempts + 1
        limit = type(instance).max_attempts or self.max_attempts
        if attempts >= limit:
            work.stage(
                rank,
                ActionStatus.FAILED,
                attempts=attempts,
                message=f"execute died {attempts} times (max_attempts={limit})",
            )
            return None
        work.stage(rank, attempts=attempts)
        died = f"execute died in an earlier run (death {attempts})"
        if not type(instance).overrides_change_params_on_error():
            # Nothing can die in the default hook (retry as is): straight to execute.
            work.events.append(NewEvent(rank, None, None, f"{died}; retrying it as is"))
            return self._execute(work, rank, instance)
        self._commit(work, TaskStatus.RECOVERING, f"{died}; calling change_params_on_error")
        try:
            retry = self._hook(
                work, rank, instance, "change_params_on_error", instance.change_params_on_error
            )
        except _HookDied:
            return Outcome.ERROR
        if not retry:
            work.stage(
                rank, ActionStatus.FAILED, message="change_params_on_error gave up (returned False)"
            )
            return None
        return self._execute(work, rank, instance)

    def _start_next(self, work: _Work) -> Outcome | None:
        """Between actions: start the next pending one, or end the task."""
        rank = work.next_pending()
        if rank is None:
            final = TaskStatus.FAILED if work.any_failed() else TaskStatus.FINISHED
            self._commit(work, final, f"no action left: task {final}")
            log.info("run %s: task %s (%s) %s", self.run_id, work.task.id, work.task.name, final)
            return Outcome.FAILED if final is TaskStatus.FAILED else Outcome.FINISHED
        if time.time() >= self.deadline or self.stop_requested:
            why = "stop requested" if self.stop_requested else "deadline reached"
            self._commit(work, TaskStatus.CREATED, f"{why} before action {rank}")
            return Outcome.DEFERRED
        instance = self._instantiate(work, work.actions[rank])
        if isinstance(instance, Outcome):
            return instance
        if instance is None:
            return None
        if type(instance).overrides_init_params():
            work.stage(rank, ActionStatus.ACTIVE)
            self._commit(work, TaskStatus.STARTING, f"calling init_params of action {rank}", rank)
            try:
                wanted = self._hook(work, rank, instance, "init_params", instance.init_params)
            except _HookDied:
                return Outcome.ERROR
            if not wanted:
                work.stage(
                    rank, ActionStatus.SKIPPED, message="init_params returned False: nothing to do"
                )
                return None
        return self._execute(work, rank, instance)

    def _execute(self, work: _Work, rank: int, instance: Action) -> Outcome | None:
        """Call execute: None when it returned True (the action is done)."""
        if self.stop_requested and work.status in (TaskStatus.STARTING, TaskStatus.RECOVERING):
            # Asked to stop while init_params or change_params_on_error ran: what they
            # left is saved, and `paused` sends the next run straight to execute.
            self._commit(work, TaskStatus.PAUSED, f"stop requested before execute of {rank}")
            return Outcome.PAUSED
        work.stage(rank, ActionStatus.ACTIVE)
        self._commit(work, TaskStatus.RUNNING, f"calling execute of action {rank}", rank)
        self.actions_run += 1
        try:
            done = self._hook(
                work, rank, instance, "execute", lambda: instance.execute(self.deadline)
            )
        except _HookDied:
            return Outcome.ERROR
        if done:
            work.stage(rank, ActionStatus.DONE, message="execute returned True")
            return None
        self._commit(work, TaskStatus.PAUSED, f"execute of action {rank} returned False")
        return Outcome.PAUSED

    def _corrupt(self, work: _Work, what: str) -> Outcome:
        log.error(
            "run %s: task %s (%s): corrupt state: %s; failing it",
            self.run_id,
            work.task.id,
            work.task.name,
            what,
        )
        self._commit(work, TaskStatus.FAILED, f"corrupt state: {what}")
        return Outcome.FAILED

    # -- helpers -----------------------------------------------------------------------

    def _instantiate(self, work: _Work, record: ActionRecord) -> Action | Outcome | None:
        """The action object; None after staging the action as failed (a ref that can
        never work); Outcome.LEFT when its module cannot be imported here, which is a
        deploy slip, not the task's fault: the task is left as it was."""
        if not self.registry.resolved(record.ref):
            self._flush(work.task.id)  # importing the module runs user code
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

        return cls(dict(record.params), context=_Context(self, work.task, record.rank))

    def _leave(self, work: _Work, record: ActionRecord, err: ModuleUnavailable) -> Outcome:
        """Leave a task whose action's module cannot be imported as it was (status and
        attempts), keeping what this run already did (earlier actions of the chain)."""
        if err.module not in self.missing_modules:
            self.missing_modules.add(err.module)
            log.error(
                "run %s: %s; tasks that need it are left waiting (declare it with "
                "--import %s, the config's imports or BGTASKEX_IMPORTS, and check "
                "PYTHONPATH under cron or systemd)",
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
            self._commit(work, TaskStatus.CREATED, f"action {record.rank} waits for its module")
        return Outcome.LEFT

    def _hook(
        self, work: _Work, rank: int, instance: Action, name: str, call: Callable[[], object]
    ) -> bool:
        """Call a hook; on a normal return, stage the params (and progress, and execute
        time) it left, and return its result.

        If it raises, returns a non-bool or leaves params that are not JSON, record it and
        raise _HookDied: the task stays in its status for the next run to recover.
        """
        self._flush(work.task.id)  # what announces this hook is durable before it runs
        if self._heartbeat is not None and self._claimed and self.token is not None:
            self._heartbeat.hold(work.task.id, self.token, self._claim_sent)
        context = instance._context
        if isinstance(context, _Context):
            context.busy_since_save()
        try:
            try:
                result = call()
            finally:
                self._note_overrun(work, rank, name)
            if not isinstance(result, bool):
                raise TypeError(f"{name} must return True or False, not {result!r}")
            params = jsonable(instance.params, name, self.settings.max_params_bytes)
        except (Exception, SystemExit) as err:  # sys.exit() in a hook is a hook's error
            self._hook_died(work, rank, name, err)
            raise _HookDied from err
        elapsed = (
            context.busy_since_save()
            if name == "execute" and isinstance(context, _Context)
            else 0.0
        )
        work.stage(rank, params=params, progress=instance._progress, elapsed=elapsed)
        return result

    def _note_overrun(self, work: _Work, rank: int, name: str) -> None:
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

    def _hook_died(self, work: _Work, rank: int, name: str, err: Exception | SystemExit) -> None:
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
        event = NewEvent(
            rank,
            work.status,
            work.status,
            f"{name} raised {type(err).__name__}: {err}",
            traceback.format_exc(),
        )
        self._pending.append(Change(work.task.id, self.run_id, events=(event,), token=self.token))

    # -- writes ----------------------------------------------------------------------
    # A status must be durable before the hook it announces runs, and no sooner is
    # needed: `_commit` gathers the changes and `_flush` writes them in one transaction
    # right before the next hook (or at the end of the run). So "action i done" and
    # "action i+1 running", also across tasks, cost one commit. Between the two only
    # the runner's own code and a read run; a crash there is a crash just before the
    # commit, which the next run recovers from like any other. The first change of a
    # task also takes its claim (file and database locks), so that costs no commit.

    def _commit(
        self, work: _Work, status: TaskStatus, message: str, current_rank: int | None = None
    ) -> None:
        """Gather the task's new status with every staged action change and event."""
        events = list(work.events)
        if status != work.status:
            events.append(NewEvent(None, work.status, status.value, message))
        change = Change(
            work.task.id,
            self.run_id,
            status=status,
            current_rank=current_rank,
            actions=tuple(work.staged.values()),
            events=tuple(events),
            token=self.token,
        )
        if self._claim_from is not None and self.claims is not None:
            change = replace(
                change,
                token=self._claim_from,
                claim_as=self.claims.worker,
                lease=self.claims.lease,
            )
            self.token, self._claim_from = self._claim_from + 1, None
        self._pending.append(change)
        work.status = status
        work.staged.clear()
        work.events.clear()

    def _flush(self, current: int | None = None) -> None:
        """Write the gathered changes in one transaction.

        When a task was cancelled or claimed by another run meanwhile, its changes are
        not written: the other tasks' are, then a task already processed is ended as
        cancelled (or counted as lost), and for the task being processed (`current`)
        TaskInterrupted (or ClaimLost) is raised.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            self._write(pending)
        except (TaskInterrupted, ClaimLost):
            refused: dict[int, TaskInterrupted | ClaimLost] = {}
            for change in pending:
                if change.task_id not in refused:
                    try:
                        self._write([change])
                    except (TaskInterrupted, ClaimLost) as err:
                        refused[change.task_id] = err
            for task_id, why in sorted(refused.items()):
                if task_id != current:
                    self._recount(task_id, why)
            if current in refused:
                self._unwritten.clear()
                raise refused[current] from None
        self._unwritten.clear()

    def _recount(self, task_id: int, err: TaskInterrupted | ClaimLost) -> None:
        """A task already processed whose last writes were refused."""
        if isinstance(err, TaskInterrupted):
            self.store.end_cancelled(task_id, self.run_id, None, None)
            now = Outcome.CANCELLED
        else:
            log.warning("run %s: %s; its last writes are dropped", self.run_id, err)
            now = Outcome.LOST
        outcome = self._unwritten.get(task_id)
        if outcome is not None:
            self._counts[outcome] -= 1
            self._counts[now] += 1

    def _write(self, changes: list[Change]) -> None:
        sent = time.monotonic()
        try:
            self.store.apply(*changes)
        except (DatabaseUnavailable, TaskInterrupted, ClaimLost):
            raise
        except StorageError as err:
            # One failed statement (a lock timeout, a serialisation failure) must not
            # turn into a death the next run would blame on the hook that just returned.
            log.info("run %s: %s; writing it again", self.run_id, err)
            time.sleep(0.05)
            self.store.apply(*changes)
        if any(c.claim_as is not None and c.task_id == self._held for c in changes):
            self._claimed, self._claim_sent = True, sent


class StopRequest(threading.Event):
    """Set when a run (or the daemon) is asked to stop; `signum` says by which signal."""

    signum: int | None = None


@contextmanager
def stop_on_signals(stop: StopRequest, signals: Sequence[int]) -> Iterator[None]:
    """While the block runs, the first of `signals` sets `stop` (finish the current hook,
    start nothing new; `Action.should_stop()` turns True) and a second one exits at once,
    like a crash, which the next run recovers from. Only the main thread can do this."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            log.warning("signal %s again: stopping now", signum)
            os._exit(128 + signum)
        stop.signum = signum
        stop.set()
        log.warning("signal %s: stopping after the current hook (again to stop now)", signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def run(
    store: Store,
    registry: Registry,
    *,
    max_execution_time: float,
    max_attempts: int = 5,
    lock_path: str | Path,
    wait: float = 0.0,
    retention: Mapping[str, float] | None = None,
    observer: RunObserver | None = None,
    queues: Collection[str] | None = None,
    exclude_queues: Collection[str] = (),
    not_after: float | None = None,
    planner: Callable[[], object] | None = None,
    stop: threading.Event | None = None,
    settings: Settings | None = None,
) -> RunSummary:
    """One run under the lock: the planner (if any), the tasks, then retention with what
    is left of the budget. The deadline is the lock time plus `max_execution_time`, and
    never later than `not_after` (a window's end). `stop` ends it early (signals).

    The lock is the settings' `concurrency.lock`: the file lock (one run per host), the
    database lock (one run in the cluster), or none, where `workers` threads claim tasks
    under leases beside any other run. Raises LockBusy when another run holds the lock
    (after `wait` seconds). In every mode a task is held under a lease and a fencing
    token while it runs, so a second run let in by a lost lock passes over it; the run
    that lost its lock notices within a second or two, starts nothing more, and asks
    the current action to stop.
    """
    settings = settings or Settings()
    concurrency = settings.concurrency
    guard: AbstractContextManager[Any]
    if concurrency.lock == "file":
        guard = RunLock(lock_path, wait=wait)
    elif concurrency.lock == "database":
        guard = store.cluster_lock(wait=wait)
    else:
        if store.dialect == "sqlite":
            raise ConfigError(
                'lock = "none" needs PostgreSQL or MariaDB/MySQL: on SQLite the file lock '
                "keeps one runner"
            )
        guard = nullcontext()
    asked = time.monotonic()
    with guard as held:
        began = time.monotonic()
        started_at = datetime.now(UTC)
        deadline = time.time() + max_execution_time
        if not_after is not None:
            deadline = min(deadline, not_after)
        run_id = new_run_id()
        lock_alive: Callable[[], bool] | None = (
            held.still_held if isinstance(held, RunLock) else held
        )
        lock_lost = threading.Event()
        name = process_name()
        for task_id in store.reap_dead_claims():
            log.warning("run %s: task %s: its run died (lease ended early)", run_id, task_id)
        runners = [
            Runner(
                store,
                registry,
                deadline=deadline,
                max_attempts=max_attempts,
                run_id=run_id,
                observer=observer,
                queues=queues,
                exclude_queues=exclude_queues,
                stop=stop,
                settings=settings,
                claims=Claims(f"{name}/{run_id}.{i}", concurrency.lease, shared=concurrency.claims),
                lock_alive=lock_alive if i == 0 else None,
                lock_lost=lock_lost,
            )
            for i in range(concurrency.workers)
        ]
        with store.bound(), running(run_id):
            if planner is not None:
                try:
                    planner()
                except Exception:  # a planner's bug must not stop the tasks already queued
                    log.exception("run %s: the process's callable raised", run_id)
            summary = runners[0].run() if len(runners) == 1 else _run_all(store, runners)
            purged = 0
            if retention and time.time() < deadline:
                purged = store.apply_retention(dict(retention), deadline=deadline)
        return replace(
            summary,
            budget=max_execution_time,
            lock_wait=began - asked,
            started_at=started_at,
            purged=purged,
            elapsed=time.monotonic() - began,
        )


def _run_all(store: Store, runners: Sequence[Runner]) -> RunSummary:
    """Run each runner in a thread of its own (each on a connection of its own) and add
    up what they did; the first error of one, if any, is raised once all are done."""
    results: list[RunSummary | BaseException | None] = [None] * len(runners)

    def work(index: int) -> None:
        try:
            with store.bound():
                results[index] = runners[index].run()
        except BaseException as err:  # re-raised below, in the calling thread
            results[index] = err

    threads = [
        threading.Thread(target=work, args=(i,), name=f"bgtaskex-worker-{i}", daemon=True)
        for i in range(len(runners))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timed join lets the main thread take its signals
            thread.join(0.5)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    done = [r for r in results if isinstance(r, RunSummary)]
    return RunSummary(
        run_id=done[0].run_id,
        **{
            name: sum(getattr(r, name) for r in done)
            for name in (
                "finished",
                "paused",
                "failed",
                "errors",
                "cancelled",
                "lost",
                "actions",
                "left_waiting",
            )
        },
        elapsed=max(r.elapsed for r in done),
        missing_modules=tuple(sorted({m for r in done for m in r.missing_modules})),
        max_overrun=max(r.max_overrun for r in done),
    )
