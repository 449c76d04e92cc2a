"""`bgtaskex daemon`: an APScheduler 3 loop that triggers the scheduled processes.

Every trigger is `Client.run_once(process=...)`, the very run of `bgtaskex run-once`
(same lock, budget and order), in a child process forked for it (`runchild`): a hook
overrunning the deadline by `kill_after` ends the child, never the daemon. One worker
thread runs the triggers one at a time; a trigger missed or due while a run is still
going is coalesced into one run (`coalesce`, `max_instances=1`, a misfire grace), so a
slow run never stacks up runs.

Signals: SIGTERM or SIGINT stop gracefully (the running action sees `should_stop()`, no
new hook starts, exit 0 within `stop_timeout`); a second one exits at once (the next run
recovers). Both are forwarded to the run's child (SIGUSR1, then SIGKILL). SIGHUP
reloads the config between runs. Under systemd (`Type=notify`) it says READY, pings the
watchdog, and keeps a STATUS line.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .client import Client
from .clockstep import ClockWatch
from .config import Settings
from .exceptions import BgtaskexError, StorageError
from .notify import Notifier
from .plan import Routing
from .processes import Process
from .run.signals import StopRequest, stop_or_exit
from .runchild import GRACE, Children, InProcess
from .urls import sqlite_path
from .wakeup import WakeUps
from .walltime import local_now, local_zone

if TYPE_CHECKING:
    from .crontab import CrontabTrigger

log = logging.getLogger(__name__)

MISFIRE_GRACE = 30  # seconds a late trigger still runs (then it is skipped, not queued)
#: The longest a process whose runs move nothing on (every waiting task's module cannot
#: be imported) waits between two runs woken by the poll: its interactive tasks stay
#: waiting, and each such run would log the same error and record a run.
STALLED_WAKE_MAX = 60.0


class Daemon:
    """The scheduler, its processes, and the state a graceful stop needs."""

    def __init__(
        self,
        load: Callable[[], tuple[Settings, Client]],
        notifier: Notifier | None = None,
    ) -> None:
        self.load = load
        self.settings, self.client = load()
        self.database_file = _file_identity(self.settings)  # SQLite: the file it opened
        self.failure: BgtaskexError | None = None  # why the daemon stopped itself
        self.notifier = notifier or Notifier()
        self.stop = StopRequest()
        self.busy_since: float | None = None  # monotonic time the current run began
        self.busy_budget = 0.0  # that run's max_execution_time
        self.idle = threading.Event()
        self.idle.set()
        self.runs = 0
        self.children: Children | InProcess = Children() if hasattr(os, "fork") else InProcess()
        self.processes: dict[str, Process] = {}  # the process of each job
        self.last_fire: dict[str, datetime] = {}  # the latest fire time each job ran for
        #: The processes whose last run moved nothing on: no poll wakes them before the
        #: monotonic time given; the delay after it doubles up to STALLED_WAKE_MAX.
        self.stalled: dict[str, tuple[float, float]] = {}
        from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.scheduler = BlockingScheduler(
            timezone=local_zone(),
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE,
            },
        )
        self.scheduler.add_listener(self._missed, EVENT_JOB_MISSED)
        self.scheduler.add_listener(self._submitted, EVENT_JOB_SUBMITTED)

    # -- the jobs ------------------------------------------------------------------------

    def schedule(self) -> None:
        """One job per process, from the current settings. A process whose trigger
        (`every` or `cron`) did not change keeps its job, and so its phase (a reload
        neither runs it at once nor restarts its interval); the others are (re)created."""
        wanted = {process.name: process for process in self.settings.scheduled}
        for name in set(self.processes) - set(wanted):
            self.last_fire.pop(name, None)
            if self.scheduler.get_job(name) is not None:
                self.scheduler.remove_job(name)
        for process in wanted.values():
            old = self.processes.get(process.name)
            job = self.scheduler.get_job(process.name)
            if job is not None and old is not None and _same_trigger(old, process):
                job.modify(args=[process])
                log.info("process %s: %s (phase kept)", process.name, process.describe_trigger())
                continue
            if job is not None:
                job.remove()
            first: dict[str, Any] = {}
            if process.every is not None:  # an interval starts with a run, like cron's first tick
                first["next_run_time"] = local_now()
            self.scheduler.add_job(
                self.tick,
                process.trigger(),
                args=[process],
                id=process.name,
                name=process.name,
                **first,
            )
            log.info("process %s: %s", process.name, process.describe_trigger())
        self.processes = wanted

    def _missed(self, event: Any) -> None:
        """A trigger skipped because it came later than the misfire grace (the daemon
        was busy, stopped, or the clock stepped forward)."""
        log.warning(
            "process %s: the trigger of %s was missed by more than %ss; skipped",
            event.job_id,
            event.scheduled_run_time.astimezone(local_zone()).isoformat(timespec="seconds"),
            MISFIRE_GRACE,
        )

    def _submitted(self, event: Any) -> None:
        """A trigger handed to the worker (the tick runs the process for it): remember
        its fire time (the latest, when missed ones are coalesced into this run)."""
        if event.scheduled_run_times:
            self.last_fire[event.job_id] = max(event.scheduled_run_times)

    def clock_stepped_back(self, seconds: float) -> None:
        """The wall clock went back `seconds` (APScheduler waits for wall-clock times, and
        would wait as long as the step). An `every` job's next run time moves back as
        much: it keeps its place in real time. A `cron` job's becomes its first trigger
        time at or after that moved time and after the last fire time it ran for: not
        sooner in real time than planned, never a time it already ran, shown again by the
        clock (however long the step, as in crontab), and no later than its next
        wall-clock time. A job already due stays due."""
        from apscheduler.jobstores.base import JobLookupError

        from .crontab import CrontabTrigger

        log.warning("the clock stepped back %.1fs: rescheduling the processes", seconds)
        step = timedelta(seconds=seconds)
        now = local_now()
        for job in self.scheduler.get_jobs():
            when = getattr(job, "next_run_time", None)  # unset on a job not yet started
            if when is None:
                continue
            moved = when.astimezone(UTC) - step
            if isinstance(job.trigger, CrontabTrigger) and moved > now:
                moved = _cron_after(job.trigger, moved, self.last_fire.get(job.id))
                if moved is None:  # pragma: no cover - a cron always fires again
                    continue
            with suppress(JobLookupError):  # removed meanwhile (a reload, a one-off job)
                job.modify(next_run_time=moved)

    def tick(self, process: Process) -> None:
        """One trigger of a process: the same run as `run-once --process NAME`."""
        if self.stop.is_set() or self._database_file_gone():
            return
        self.idle.clear()
        self.busy_budget = process.max_execution_time or self.settings.max_execution_time
        self.busy_since = time.monotonic()
        try:
            self._run_in_child(process)
        except Exception:
            log.exception("process %s: unexpected error", process.name)
        finally:
            self.busy_since = None
            self.idle.set()

    def _run_in_child(self, process: Process) -> None:
        """The run in a child process (`runchild`), killed past its deadline +
        kill_after + a grace; the child logs the run, the daemon a child that died."""
        kill_after = self.settings.kill_after
        limit = None if kill_after is None else self.busy_budget + kill_after + GRACE
        ended = self.children.run(self.client, process, limit, self.stop)
        if ended.ran or ended.died is not None:
            self.runs += 1
        if ended.ran:
            self._stalled(process.name, not ended.progressed)
        if ended.line:
            self.notifier.status(f"{process.name}: {ended.line}")
        if ended.died is not None and ended.in_planner:
            log.error(
                "process %s: the run's process %s in its planner, callable %s, before it "
                "took any task; %s (the planner runs first at each run: one that never "
                "returns keeps the process's tasks from running)",
                process.name,
                ended.died,
                process.callable,
                "the daemon is stopping" if self.stop.is_set() else "the daemon goes on",
            )
            self.notifier.status(f"{process.name}: the run's process {ended.died} in its planner")
        elif ended.died is not None:
            log.error(
                "process %s: the run's process %s; %s, and the next run recovers its task",
                process.name,
                ended.died,
                "the daemon is stopping" if self.stop.is_set() else "the daemon goes on",
            )
            self.notifier.status(f"{process.name}: the run's process {ended.died}")

    def _stalled(self, name: str, stalled: bool) -> None:
        if not stalled:
            self.stalled.pop(name, None)
            return
        delay = self.stalled.get(name, (0.0, self.settings.concurrency.poll / 2))[1] * 2
        delay = min(delay, STALLED_WAKE_MAX)
        self.stalled[name] = (time.monotonic() + delay, delay)

    def _database_file_gone(self) -> bool:
        """SQLite: the database file deleted or replaced under the daemon. Its runs would
        each create an empty file and fail on it ("no such table") for ever: one
        CRITICAL line instead, and exit 4 (`failure`), so that the supervisor restarts
        it on the file that is there now (a new one gets a fresh schema)."""
        now = _file_identity(self.settings)
        if self.database_file == _MISSING:  # not there yet at the start: the first one seen
            self.database_file = now
        if self.database_file is None or now == self.database_file:
            return False
        self.failure = StorageError(
            f"the database file {sqlite_path(self.settings.url)} was deleted or replaced "
            "under the daemon: stopping, so that a restart opens the file there now"
        )
        log.critical("%s", self.failure)
        self.stop.set()
        self._off_signal(self.scheduler.shutdown, wait=False)
        return True

    def wake(self, queue: str, notified: bool = False) -> None:
        """An interactive task waits in `queue`: if the daemon is idle, run the process
        that serves the queue now instead of at its next trigger (inside its window).
        A process whose last run moved nothing on (a task waits for a module it cannot
        import) is woken by the poll at growing intervals, and at once only by the
        notification of a new task (PostgreSQL)."""
        if self.stop.is_set() or not self.idle.is_set():
            return  # the run going on takes interactive tasks first anyway
        now = local_now()
        for process in self.settings.scheduled:
            if not Routing.of(self.settings, process).serves(queue):
                continue
            quiet_until = self.stalled.get(process.name, (0.0, 0.0))[0]
            if not notified and time.monotonic() < quiet_until:
                return
            if process.window is not None and process.window.window_end(now) is None:
                return
            job = self.scheduler.get_job(process.name)
            if job is not None and (
                job.next_run_time is None or job.next_run_time.timestamp() > now.timestamp()
            ):
                log.info("process %s: woken by an interactive task in %s", process.name, queue)
                job.modify(next_run_time=now)
            return

    def reload(self) -> None:
        """SIGHUP, run by the worker between two runs: new settings, new jobs."""
        self.notifier.reloading()
        try:
            settings, client = self.load()
        except BgtaskexError as err:
            log.error("reload failed, keeping the running config: %s", err)
        else:
            self.client.close()
            self.settings, self.client = settings, client
            self.database_file = _file_identity(settings)
            self.stalled.clear()  # new imports or pythonpath may let them run
            self.schedule()
            log.info("config reloaded")
        self.notifier.send("READY=1", "STATUS=config reloaded")

    # -- signals and the watchdog ------------------------------------------------------

    def _on_stop(self, signum: int, _frame: object) -> None:
        self.children.forward(second=self.stop.is_set())  # the run's child stops too
        stop_or_exit(self.stop, signum, log)  # a second signal exits here
        self.notifier.stopping()
        self._off_signal(self.scheduler.shutdown, wait=False)

    def _on_hup(self, _signum: int, _frame: object) -> None:
        log.info("SIGHUP: reloading the config after the current run")
        self._off_signal(self.scheduler.add_job, self.reload, id="reload", replace_existing=True)

    @staticmethod
    def _off_signal(call: Callable[..., object], *args: object, **kwargs: object) -> None:
        """Call the scheduler from a thread of its own: a signal handler runs on the main
        thread, in the middle of the scheduler's loop, which may hold the very locks the
        call needs (a deadlock) or be iterating over the jobs the call changes."""
        threading.Thread(target=call, args=args, kwargs=kwargs, daemon=True).start()

    def _watchdog(self, interval: float) -> None:
        """Ping while the loop is healthy: a run stuck far past its budget stops the
        pings, and systemd restarts the service."""
        while not self.stop.wait(interval):
            began = self.busy_since
            limit = self.busy_budget + self.settings.stop_timeout + 60
            if began is None or time.monotonic() - began < limit:
                self.notifier.watchdog()

    # -- the loop ----------------------------------------------------------------------

    def serve(self) -> int:
        """Run until a signal stops it; the exit code (0 after SIGTERM, 130 after SIGINT)."""
        previous = {
            signal.SIGTERM: signal.signal(signal.SIGTERM, self._on_stop),
            signal.SIGINT: signal.signal(signal.SIGINT, self._on_stop),
            signal.SIGHUP: signal.signal(signal.SIGHUP, self._on_hup),
        }
        try:
            self.schedule()
            if self.notifier.watchdog_interval:
                threading.Thread(
                    target=self._watchdog,
                    args=(self.notifier.watchdog_interval,),
                    name="bgtaskex-watchdog",
                    daemon=True,
                ).start()
            WakeUps(
                lambda: self.client, self.wake, self.settings.concurrency.poll, self.stop
            ).start()
            ClockWatch(self.clock_stepped_back).start(self.stop)
            names = ", ".join(p.name for p in self.settings.scheduled)
            self.notifier.ready(f"serving {names}")
            log.info("daemon started (pid %s): %s", os.getpid(), names)
            self.scheduler.start()  # returns once a signal shut it down
            if not self.idle.wait(self.settings.stop_timeout):
                code = 128 + (self.stop.signum or signal.SIGTERM)  # as a second signal
                log.error(
                    "the current run did not stop within stop_timeout=%ss; killing it and "
                    "exiting (%s; the next run recovers it)",
                    self.settings.stop_timeout,
                    code,
                )
                self.children.kill()
                logging.shutdown()
                os._exit(code)  # a thread still waits on the run: do not wait for it
            log.info("daemon stopped after %s run(s)", self.runs)
            if self.failure is not None:
                return self.failure.exit_code
            return 128 + signal.SIGINT if self.stop.signum == signal.SIGINT else 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.client.close()


_MISSING = (0, 0)  # the identity of a SQLite file that is not there


def _file_identity(settings: Settings) -> tuple[int, int] | None:
    """The device and inode of the SQLite database file (None for a server database,
    or a file not there)."""
    path = sqlite_path(settings.url)
    try:
        found = os.stat(path) if path is not None else None
    except OSError:
        return _MISSING if path is not None else None
    return (found.st_dev, found.st_ino) if found is not None else None


def _cron_after(trigger: CrontabTrigger, moved: datetime, last: datetime | None) -> datetime | None:
    """The first fire time of `trigger` at or after `moved` and after `last` (the one
    it ran for; None: none yet): the later of the first after each bound."""
    fire = trigger.get_next_fire_time(None, moved.astimezone(trigger.zone))
    if last is None or fire is None:
        return fire
    after_last = trigger.get_next_fire_time(last, last)
    return None if after_last is None else max(fire, after_last)


def _same_trigger(old: Process, new: Process) -> bool:
    return (old.every, old.cron) == (new.every, new.cron)
