"""The Python API: `connect()` and the `Client` it returns."""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING

from .config import Settings, load_settings
from .database import SchemaUpgrade, open_store, upgrade_schema
from .exceptions import InvalidState, UsageError
from .inputs import (
    ActionSpec,
    check_queue,
    check_task_fields,
    check_unique_key,
    expand_statuses,
    filter_text,
    not_before_moment,
    parse_actions,
    pause_reason,
    whole_number,
)
from .models import (
    BulkResult,
    Enqueued,
    Event,
    HourActivity,
    QueuePause,
    QueueSummary,
    RunRecord,
    RunStart,
    RunSummary,
    Stats,
    Task,
    TaskFilter,
    TaskPage,
    TaskState,
)
from .owner import holder_name, host_name, operator_name
from .plan import RunPlan
from .processes import Process
from .pythonpath import use as use_pythonpath
from .registry import Registry, load_callable
from .run.locks import lock_for
from .run.observer import Outcome, RunObserver
from .run.preflight import module_problem
from .store.core import Store

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from .health import Health

__all__ = ["Client", "Outcome", "RunObserver", "SchemaUpgrade", "connect", "upgrade_schema"]


class Client:
    """Enqueue and inspect tasks; run them from Python (the same run as `run-once`)."""

    def __init__(self, store: Store, registry: Registry, settings: Settings) -> None:
        self.store = store
        self.registry = registry
        self.settings = settings

    def enqueue(
        self,
        name: str,
        actions: Sequence[ActionSpec],
        *,
        type: str = "cron",
        queue: str = "default",
        not_before: datetime | timedelta | None = None,
        unique_key: str | None = None,
        connection: Connection | None = None,
    ) -> int:
        """Queue a task made of `actions`, in order; returns its id.

        Each ref is checked now (it must name a subclass of `bgtaskex.Action`), so a typo
        is an error here rather than a failed task later; so is the size of its params
        (`max_params_bytes`, ParamsTooLarge, a UsageError).

        `not_before`: the task is not due before then, an aware datetime or a timedelta
        from now. `unique_key`: while a task with this key has not ended, queue nothing
        and return that task's id (`enqueue_unique` tells which happened). `connection`:
        an application's SQLAlchemy Connection on this same database; the task is
        written in its transaction, uncommitted (see the README, "in your transaction").
        """
        return self.enqueue_unique(
            name,
            actions,
            type=type,
            queue=queue,
            not_before=not_before,
            unique_key=unique_key,
            connection=connection,
        ).id

    def enqueue_unique(
        self,
        name: str,
        actions: Sequence[ActionSpec],
        *,
        unique_key: str | None,
        type: str = "cron",
        queue: str = "default",
        not_before: datetime | timedelta | None = None,
        connection: Connection | None = None,
    ) -> Enqueued:
        """`enqueue`, telling what happened: `Enqueued(id, created)`, created False when
        a task with `unique_key` had not ended yet (`id` is that task's). The database
        decides, race-free across processes and hosts (a unique index)."""
        task_type = check_task_fields(name, type, queue)
        if unique_key is not None:
            check_unique_key(unique_key)
        due = not_before_moment(not_before)
        new_actions = parse_actions(actions, max_params_bytes=self.settings.max_params_bytes)
        for action in new_actions:
            self.registry.resolve(action.ref)
        return self.store.enqueue_task(
            name.strip(),
            task_type,
            queue.strip(),
            new_actions,
            not_before=due,
            unique_key=unique_key,
            connection=connection,
        )

    def next_due_at(self, plan: RunPlan | None = None) -> datetime | None:
        """When the next task that waits for its `not_before` becomes due, in the queues
        a run of `plan` serves (None: any); None when no task waits for its time."""
        return self.store.next_due_at(plan.routing if plan is not None else None)

    def waiting_interactive_queues(self) -> list[str]:
        """The queues holding interactive tasks queued and not yet started: the daemon's
        cheap poll for work that should not wait for the next tick (see `wake_ups`)."""
        return self.store.waiting_interactive_queues()

    def wake_ups(self, timeout: float) -> Iterator[str | None]:
        """On PostgreSQL, the queue named by each `enqueue` of an interactive task, as it
        comes; None every `timeout` seconds without one (elsewhere, only None): then ask
        `waiting_interactive_queues`. What the daemon's wake-up thread listens to."""
        return self.store.wake_ups(timeout)

    def get(self, task_id: int) -> Task:
        """The task with its actions; raises TaskNotFound."""
        return self.store.get_task(task_id)

    def list_tasks(
        self,
        where: TaskFilter | None = None,
        *,
        status: Iterable[str] | None = None,
        limit: int = 50,
    ) -> list[Task]:
        """Tasks still to run first (in run order), then ended ones, newest first.

        `status` is a shortcut for `TaskFilter(statuses=...)`; "active" means every
        status that is not terminal. A task of more than 20 actions comes with those
        `list` shows only (its current, first unfinished and first failed action), and
        `Task.action_count` set (see `Task.total_actions`).
        """
        if status is not None:
            where = replace(where or TaskFilter(), statuses=expand_statuses(status))
        return self.store.list_tasks(where, limit=limit)

    def count_tasks(self, where: TaskFilter | None = None, *, up_to: int | None = None) -> int:
        return self.store.count_tasks(where, up_to=up_to)

    def page_tasks(
        self,
        where: TaskFilter | None = None,
        *,
        before_id: int | None = None,
        limit: int = 50,
        count_up_to: int = 10_000,
    ) -> TaskPage:
        """A page of the tasks `where` selects, newest first (id descending), below
        `before_id`; `total` counted up to `count_up_to` (see `store.pages`). Each task
        comes with its actions as `list_tasks` gives them."""
        if before_id is not None:
            whole_number("before_id", before_id, 1, 2**63 - 1)
        limit = whole_number("limit", limit, 1, 1000)
        up_to = whole_number("count_up_to", count_up_to, 0, 10_000_000)
        return self.store.page_tasks(where, before_id, limit, up_to)

    def activity(self, hours: int = 24) -> list[HourActivity]:
        """Actions ended done and failed per hour over the last `hours` hours (this one
        included), oldest first, one entry per hour, zeros included."""
        hours = whole_number("hours", hours, 1, 24 * 366)
        this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        return self.store.activity(this_hour - timedelta(hours=hours - 1), hours)

    def cancel_where(self, where: TaskFilter, *, expect: int) -> BulkResult:
        """`cancel` every task `where` selects, by the same rules; refused whole
        (InvalidState) when more than `expect` match now (see `store.bulk`)."""
        lock = lock_for(self.settings.concurrency.lock)
        executing = functools.partial(lock.run_in_progress, self.store, self.settings)
        return self.store.admin.cancel_where(where, expect=expect, executing=executing)

    def retry_where(
        self, where: TaskFilter, *, expect: int, from_start: bool = False
    ) -> BulkResult:
        """`retry` every task `where` selects, by the same rules (a task not failed is
        refused); refused whole when more than `expect` match now (see `store.bulk`)."""
        return self.store.admin.retry_where(where, expect=expect, from_start=from_start)

    def task_states(self, tasks: Iterable[Task]) -> dict[int, TaskState]:
        """What `list` says of each task, by id: the failed or next action, and a plain
        state (`execute died (2/5), retry at 14:05:00 UTC`). Imports nothing; reads the
        paused queues (one query) when a task has not ended."""
        from . import taskstate

        problem = module_problem(self.registry)
        limits: dict[str, int] = {}

        def limit(ref: str) -> int:
            if ref not in limits:
                limits[ref] = taskstate.max_attempts_of(ref, self.registry, self.settings)
            return limits[ref]

        tasks = list(tasks)
        pauses: dict[str, QueuePause] = {}
        if any(task.ended_at is None for task in tasks):  # one read, for queue_paused
            pauses = {pause.queue: pause for pause in self.paused_queues()}
        now = datetime.now(UTC)
        return {task.id: taskstate.task_state(task, problem, limit, now, pauses) for task in tasks}

    def task_page(self, task_id: int, max_actions: int) -> tuple[Task, int]:
        """The task with its first `max_actions` actions (and the current one), and how
        many it has; raises TaskNotFound."""
        return self.store.get_task_page(task_id, max_actions)

    def recent_events(self, task_id: int, limit: int) -> tuple[list[Event], int]:
        """The latest `limit` events of a task's history, oldest first, and how many it has."""
        return self.store.admin.recent_events(task_id, limit)

    def cancel(self, task_id: int) -> bool:
        """Cancel a task: True when it is cancelled now; False when a run is executing it
        and will cancel it at its next checkpoint or hook return. A task a worker holds a
        live claim on is being executed, whatever this process's own `lock` says."""
        lock = lock_for(self.settings.concurrency.lock)
        return self.store.admin.cancel(
            task_id, executing=lambda: lock.run_in_progress(self.store, self.settings)
        )

    def retry(self, task_id: int, *, from_start: bool = False) -> None:
        """Put a failed task back in the queue (see `store.admin.Admin.retry`)."""
        self.store.admin.retry(task_id, from_start=from_start)

    def purge(self, where: TaskFilter | None = None) -> int:
        """Delete ended tasks (with their actions and events) that `where` selects."""
        return self.store.admin.purge(where)

    def purge_preview(self, where: TaskFilter | None = None) -> tuple[int, list[int]]:
        """How many tasks `purge(where)` would delete now, and a few of their ids."""
        return self.store.admin.purge_preview(where)

    def stats(self) -> Stats:
        """Counts per queue, type and status, the oldest waiting task, actions ended in
        the last hour and day, mean execute time (`bgtaskex stats`); the end of the last
        run that ended ok and the run records kept per outcome (dead runs as "died")."""
        found = self.store.admin.stats()
        counts, going = self.store.runs.outcomes()
        now, grace = datetime.now(UTC), self.settings.died_after
        counts.pop("running", None)
        for record in going:
            outcome = record.shown(grace, now).outcome
            counts[outcome] = counts.get(outcome, 0) + 1
        return replace(
            found,
            last_ok_run_end=self.store.runs.last_ok_end(),
            runs=tuple(sorted(counts.items())),
        )

    def queues(self) -> list[QueueSummary]:
        """Each queue that has tasks or a pause: its tasks waiting, running and failed,
        its oldest waiting task, its pause (`bgtaskex queues`)."""
        return self.store.queues.summary()

    def queue_names(self) -> list[str]:
        """The queues that have tasks or a pause, by name (a few index seeks, where
        `queues` counts every task)."""
        return self.store.queues.names()

    def paused_queues(self) -> list[QueuePause]:
        """The queues an operator paused, by name."""
        return self.store.queues.pauses()

    def pause(self, queue: str, reason: str | None = None) -> tuple[QueuePause, bool]:
        """Pause `queue`: from its next pick on, no run on any host takes a task of it;
        a task executing finishes its current hook and stops before its next hook.
        Returns the pause and True when it is new; pausing a paused queue keeps its
        start and replaces its reason when one is given (see `queues.Queues.pause`)."""
        return self.store.queues.pause(check_queue(queue), pause_reason(reason), operator_name())

    def resume(self, queue: str) -> QueuePause:
        """Lift the pause of `queue` (and wake the daemons on PostgreSQL); returns the
        pause lifted. InvalidState (exit 5) when the queue is not paused."""
        name = check_queue(queue)
        # No schema (a client opened with create=False): nothing is paused, nothing to write.
        lifted = None if self.store.no_schema else self.store.queues.resume(name)
        if lifted is None:
            paused = [pause.queue for pause in self.store.queues.pauses()]
            which = f"paused: {', '.join(paused)}" if paused else "no queue is paused"
            raise InvalidState(f"queue {name!r} is not paused ({which})")
        return lifted

    def runs(
        self, *, limit: int = 20, process: str | None = None, failed: bool = False
    ) -> list[RunRecord]:
        """The latest `limit` runs recorded, newest first (`bgtaskex runs`): only those
        of `process` (None: any), and with
        `failed` only those whose outcome is not ok (a run that died included, a run
        going on not). A run recorded "running" whose process is gone, or older than
        its budget plus `settings.died_after`, is shown as "died"."""
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UsageError(f"limit must be a whole number >= 1, got {limit!r}")
        if process is not None:
            filter_text("process", process, 200)
        now, grace = datetime.now(UTC), self.settings.died_after
        fetch = limit
        while True:
            rows = self.store.runs.recent(limit=fetch, process=process, not_ok=failed)
            shown = [r.shown(grace, now) for r in rows]
            if failed:  # a run going on is not a failed one: read past it
                shown = [r for r in shown if r.outcome != "running"]
            if len(shown) >= limit or len(rows) < fetch:
                return shown[:limit]
            fetch *= 2

    def health(self, *, failed_within: float | None = None) -> Health:
        """What `bgtaskex check` reports: tasks stuck past `settings.stuck_after`, tasks
        waiting for a module that cannot be imported, the queue's size, the run lock;
        the processes late to end a run ok (`health._late`), the latest run of
        each process that died, was refused, ended on storage or failed; with
        `failed_within` (seconds), the tasks that failed within it. An error of the
        database is reported in `Health.error`, not raised."""
        from .health import check_health  # not on a run's path

        return check_health(self.store, self.registry, self.settings, failed_within)

    def events(self, task_id: int) -> list[Event]:
        """The history of a task, oldest first."""
        return self.store.events(task_id)

    def run_once(
        self,
        *,
        max_execution_time: float | None = None,
        wait: float = 0.0,
        process: Process | None = None,
        stop: threading.Event | None = None,
        observer: RunObserver | None = None,
        now: datetime | None = None,
        plan: RunPlan | None = None,
    ) -> RunSummary:
        """One run, exactly as `bgtaskex run-once` does it (same lock, same order).

        Without a `process`: every queue that no scheduled process names. With one: only
        its queues, its budget, its callable first, and only inside its window
        (OutsideWindow otherwise), the deadline capped at the window's end. `now` (aware)
        stands in for the clock in the window check. `plan`: one built already
        (`RunPlan.of`), instead of `max_execution_time`, `wait`, `process` and `now`.
        """
        from .run import run

        if plan is None:
            plan = RunPlan.of(self.settings, process, budget=max_execution_time, wait=wait, now=now)
        elif process is not None or max_execution_time is not None or wait or now is not None:
            raise UsageError("give run_once a plan, or what to build it from, not both")
        planner = None
        if plan.planner is not None:
            target = load_callable(plan.planner, f"process {plan.process}: callable")
            planner = functools.partial(target, self)
        return run(
            self.store,
            self.registry,
            plan,
            self.settings,
            planner=planner,
            observer=observer,
            stop=stop,
        )

    def record_refused(
        self, error: BaseException, *, process: Process | None = None, started_at: datetime
    ) -> str | None:
        """Record a run-once that refused to start with `error` (a deploy slip, exit 2)
        as one run row, outcome "refused", its error masked: `check` warns about it and
        `runs --failed` lists it. Nothing on a database without bgtaskex's schema (a
        read-only client creates none). Returns the run id recorded, or None."""
        import os

        from .run.worker import new_run_id
        from .urls import mask_secrets

        if self.store.no_schema:
            return None
        budget = (process.max_execution_time if process else None) or (
            self.settings.max_execution_time
        )
        run_id = new_run_id()
        start = RunStart(
            run_id=run_id,
            process=process.name if process else None,
            holder=f"{holder_name()}/{run_id}",
            host=host_name(),
            pid=os.getpid(),
            lock=str(self.settings.concurrency.lock),
            started_at=started_at,
            budget=budget,
        )
        self.store.runs.refused(start, mask_secrets(str(error) or type(error).__name__)[:2000])
        return run_id

    def close(self) -> None:
        self.store.close()

    def forked(self) -> None:
        """Call first thing in a child process forked from one using this client (the
        daemon's run children): the child opens connections of its own."""
        self.store.forked()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def connect(
    url: str | None = None,
    *,
    config: str | None = None,
    imports: Iterable[str] = (),
    settings: Settings | None = None,
    trust_refs: bool = True,
    readonly: bool = False,
    create: bool = True,
) -> Client:
    """A client on `url`; by default the URL of the config/environment, else the embedded
    SQLite database in the user's data directory. The schema is created on first use.

    `trust_refs`: the caller wrote the refs it enqueues, so their modules may be imported;
    the CLI passes False and imports declared modules only.

    `readonly`: for looking only; creates and migrates nothing (see `open_store`). On a
    database without bgtaskex's schema the client sees an empty queue in memory that
    refuses writes (StorageError). `create=False`: the same on a database without the
    schema (nothing is created), but an existing schema is upgraded and writable.

    The settings' `pythonpath` directories go on `sys.path` after the standard library."""
    if settings is None:
        settings = load_settings(config, {"database_url": url, "imports": list(imports) or None})
    use_pythonpath(settings.pythonpath)  # before any ref's module is imported
    registry = Registry(settings.imports, trust_refs=trust_refs)
    return Client(open_store(settings, readonly=readonly, create=create), registry, settings)
