"""One run: take the lock, compute the deadline, call the planner, let the workers take
due tasks until the work or the time runs out, then expire bgtaskex's own ended tasks with
what is left of the budget. `bgtaskex run-once`, a daemon tick and the tests all call
`run()`.

The pieces: `locks` (the lock mode's strategy), `worker` (one worker's loop over due
tasks), `machine` (the state machine of one task), `batch` (the writes), `claims` (the
lease of the task held).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import NoReturn

from ..config import Settings
from ..exceptions import ConfigError, StorageError
from ..models import RUN_COUNTS, RunStart, RunSummary
from ..owner import holder_name, running
from ..plan import RunPlan
from ..registry import Registry
from ..store.contract import RunStorage
from ..urls import mask_secrets
from .claims import Claims
from .failures import KILLED_EXIT
from .locks import lock_for
from .observer import RunObserver
from .worker import Worker, new_run_id

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters


def run(
    store: RunStorage,
    registry: Registry,
    plan: RunPlan,
    settings: Settings,
    *,
    planner: Callable[[], object] | None = None,
    observer: RunObserver | None = None,
    stop: threading.Event | None = None,
) -> RunSummary:
    """One run under the plan's lock: the planner (if any), the due tasks of the plan's
    queues, then the expiry of ended tasks (`settings.keep_ended`) with what is left of
    the budget. The deadline is the lock time plus `plan.budget`, and never later than
    `plan.not_after` (a window's end). `stop` ends it early (signals).

    The lock (`plan.lock`) is the file lock (one run per host), the database lock (one
    run in the cluster), or none, where `concurrency.workers` threads claim tasks under
    leases beside any other run. Raises LockBusy when another run holds the lock (after
    `plan.wait` seconds), ConfigError for no lock on SQLite. In every mode a task is held
    under a lease and a fencing token while it runs, so a second run let in by a lost
    lock passes over it; the run that lost its lock notices within a second or two,
    starts nothing more, and asks the current action to stop.
    """
    if plan.lock is not settings.concurrency.lock:
        raise ConfigError(
            f"the run's plan says lock = {plan.lock!r}, its settings {settings.concurrency.lock!r}"
        )
    asked = time.monotonic()
    with lock_for(plan.lock).hold(store, settings, plan.wait) as lock_alive:
        began = time.monotonic()
        started_at = datetime.now(UTC)
        deadline = time.time() + plan.budget
        if plan.not_after is not None:
            deadline = min(deadline, plan.not_after)
        run_id = new_run_id()
        record = store.run_started(_start(plan, run_id, started_at))
        workers = _workers(
            store, registry, plan, settings, deadline, run_id, lock_alive, observer, stop
        )
        with running(run_id):  # its record's holder reads alive in this process too
            try:
                summary, overran, purged = _serve(
                    store, plan, settings, planner, workers, run_id, deadline, observer
                )
            except BaseException as err:
                _record_end(store, record, _added_up([w.so_far() for w in workers]), err)
                raise
            summary = replace(
                summary,
                budget=plan.budget,
                lock_wait=began - asked,
                started_at=started_at,
                purged=purged,
                elapsed=time.monotonic() - began,
                max_overrun=max(summary.max_overrun, overran),
            )
            store.run_ended(record, "ok", summary)
            return summary


def _serve(
    store: RunStorage,
    plan: RunPlan,
    settings: Settings,
    planner: Callable[[], object] | None,
    workers: Sequence[Worker],
    run_id: str,
    deadline: float,
    observer: RunObserver | None,
) -> tuple[RunSummary, float, int]:
    """The run's work under its lock: release the claims of dead runs, call the
    planner, let the workers take due tasks, expire ended tasks with what is left of the
    budget. Returns what the workers did, how long the planner overran, how many ended
    tasks went."""
    for task_id in store.reap_dead_claims():
        log.warning("run %s: task %s: its run died (lease ended early)", run_id, task_id)
    with store.bound():
        overran = 0.0
        if planner is not None:
            overran = _plan(planner, plan, settings, run_id, deadline, observer or RunObserver())
        summary = workers[0].work() if len(workers) == 1 else _work_in_threads(store, workers)
        keep, purged = settings.keep_ended, 0
        if keep and time.time() < deadline:
            purged = store.purge_expired(keep, deadline=deadline)
    return summary, overran, purged


def _start(plan: RunPlan, run_id: str, started_at: datetime) -> RunStart:
    """The record of a run as it starts: `holder` ends with the run's id, so that a
    run of a process still alive that ended without its end written is told dead
    (`owner.holder_is_gone`)."""
    return RunStart(
        run_id=run_id,
        process=plan.process,
        holder=f"{holder_name()}/{run_id}",
        host=socket.gethostname(),
        pid=os.getpid(),
        lock=str(plan.lock),
        started_at=started_at,
        budget=plan.budget,
    )


def _record_end(store: RunStorage, record: int, done: RunSummary, err: BaseException) -> None:
    """Record the end of a run that `err` ended: outcome "storage" for an error of the
    database, "failed" for any other. Best effort: the database may be what failed (the
    record then stays "running", and reads as died once its process is gone)."""
    outcome = "storage" if isinstance(err, StorageError) else "failed"
    error = mask_secrets(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
    try:
        store.run_ended(record, outcome, done, error[:2000])
    except Exception as failed:  # the original error is what the caller must see
        log.warning("run %s: its end could not be recorded: %s", done.run_id, failed)


def _plan(
    planner: Callable[[], object],
    plan: RunPlan,
    settings: Settings,
    run_id: str,
    deadline: float,
    observer: RunObserver,
) -> float:
    """Call the process's planner under the hard limit of a hook: a planner that hangs
    must not hold the run lock for ever (under cron no later run could start). Once it
    runs `kill_after` past the deadline, one CRITICAL line and exit 7 (`KILLED_EXIT`); no
    task is held yet, so nothing is left to recover. Returns how long it ran past the
    deadline (0 when it did not)."""
    kill_after = settings.kill_after
    returned = threading.Event()
    named = f"run {run_id}: process {plan.process}: its callable ({plan.planner})"

    def watch(kill_after: float) -> None:
        if not returned.wait(max(0.0, deadline + kill_after - time.time())):
            _kill(named, deadline, kill_after)

    if kill_after is not None:
        watchdog = threading.Thread(
            target=watch, args=(kill_after,), name="bgtaskex-planner-watchdog", daemon=True
        )
        watchdog.start()
    observer.planner(True)
    try:
        planner()
    except Exception:  # a planner's bug must not stop the tasks already queued
        log.exception("run %s: the process's callable raised", run_id)
    finally:
        returned.set()
        observer.planner(False)
    overrun = time.time() - deadline
    if overrun <= 0.5:  # the end of a slice, not an overrun
        return 0.0
    log.warning("%s overran the deadline by %.1fs", named, overrun)
    return overrun


def _kill(named: str, deadline: float, kill_after: float) -> NoReturn:
    log.critical(
        "%s overran the deadline by %.1fs (kill_after=%gs): killing the run (exit %s)",
        named,
        time.time() - deadline,
        kill_after,
        KILLED_EXIT,
    )
    logging.shutdown()
    os._exit(KILLED_EXIT)


def _workers(
    store: RunStorage,
    registry: Registry,
    plan: RunPlan,
    settings: Settings,
    deadline: float,
    run_id: str,
    lock_alive: Callable[[], bool] | None,
    observer: RunObserver | None,
    stop: threading.Event | None,
) -> list[Worker]:
    """The run's workers (one, or `concurrency.workers` with no lock): the first watches
    the lock, and all stop once it is lost."""
    concurrency = settings.concurrency
    lock_lost = threading.Event()
    name = holder_name()
    return [
        Worker(
            store,
            registry,
            deadline=deadline,
            run_id=run_id,
            settings=settings,
            observer=observer,
            routing=plan.routing,
            stop=stop,
            claims=Claims(f"{name}/{run_id}.{i}", concurrency.lease, shared=concurrency.claims),
            lock_alive=lock_alive if i == 0 else None,
            lock_lost=lock_lost,
        )
        for i in range(concurrency.workers)
    ]


def _work_in_threads(store: RunStorage, workers: Sequence[Worker]) -> RunSummary:
    """Each worker in a thread of its own (each on a connection of its own), and what
    they did added up; the first error of one, if any, is raised once all are done."""
    results: list[RunSummary | BaseException | None] = [None] * len(workers)

    def work(index: int) -> None:
        try:
            with store.bound():
                results[index] = workers[index].work()
        except BaseException as err:  # re-raised below, in the calling thread
            results[index] = err

    threads = [
        threading.Thread(target=work, args=(i,), name=f"bgtaskex-worker-{i}", daemon=True)
        for i in range(len(workers))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():  # a timed join lets the main thread take its signals
            thread.join(0.5)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return _added_up([r for r in results if isinstance(r, RunSummary)])


def _added_up(done: Sequence[RunSummary]) -> RunSummary:
    return RunSummary(
        run_id=done[0].run_id,
        **{name: sum(getattr(r, name) for r in done) for name in RUN_COUNTS},
        elapsed=max(r.elapsed for r in done),
        missing_modules=tuple(sorted({m for r in done for m in r.missing_modules})),
        max_overrun=max(r.max_overrun for r in done),
    )
