"""`bgtaskex daemon`: an APScheduler 3 loop that triggers the scheduled processes.

Every trigger is `Client.run_once(process=...)`, the very run of `bgtaskex run-once`
(same lock, budget and order). One worker thread runs the triggers one at a time; a
trigger missed or due while a run is still going is coalesced into one run
(`coalesce`, `max_instances=1`, a misfire grace), so a slow run never stacks up runs.

Signals: SIGTERM or SIGINT stop gracefully (the running action sees `should_stop()`, no
new hook starts, exit 0 within `stop_timeout`); a second one exits at once (the next run
recovers). SIGHUP reloads the config between runs. Under systemd (`Type=notify`) it says
READY, pings the watchdog, and keeps a STATUS line.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from .client import Client
from .config import Settings
from .exceptions import BgtaskexError, LockBusy, OutsideWindow
from .notify import Notifier
from .plan import Routing
from .processes import Process
from .run.signals import StopRequest, stop_or_exit
from .wakeup import WakeUps

log = logging.getLogger(__name__)

MISFIRE_GRACE = 30  # seconds a late trigger still runs (then it is skipped, not queued)


class Daemon:
    """The scheduler, its processes, and the state a graceful stop needs."""

    def __init__(
        self,
        load: Callable[[], tuple[Settings, Client]],
        notifier: Notifier | None = None,
    ) -> None:
        self.load = load
        self.settings, self.client = load()
        self.notifier = notifier or Notifier()
        self.stop = StopRequest()
        self.busy_since: float | None = None  # monotonic time the current run began
        self.busy_budget = 0.0  # that run's max_execution_time
        self.idle = threading.Event()
        self.idle.set()
        self.runs = 0
        from apscheduler.executors.pool import ThreadPoolExecutor
        from apscheduler.schedulers.blocking import BlockingScheduler

        self.scheduler = BlockingScheduler(
            executors={"default": ThreadPoolExecutor(1)},
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": MISFIRE_GRACE,
            },
        )

    # -- the jobs ------------------------------------------------------------------------

    def schedule(self) -> None:
        """(Re)create one job per process, from the current settings."""
        for job in self.scheduler.get_jobs():
            job.remove()
        for process in self.settings.scheduled:
            first: dict[str, Any] = {}
            if process.every is not None:  # an interval starts with a run, like cron's first tick
                first["next_run_time"] = datetime.now().astimezone()
            self.scheduler.add_job(
                self.tick,
                process.trigger(),
                args=[process],
                id=process.name,
                name=process.name,
                **first,
            )
            log.info("process %s: %s", process.name, process.describe_trigger())

    def tick(self, process: Process) -> None:
        """One trigger of a process: the same run as `run-once --process NAME`."""
        if self.stop.is_set():
            return
        self.idle.clear()
        self.busy_budget = process.max_execution_time or self.settings.max_execution_time
        self.busy_since = time.monotonic()
        try:
            summary = self.client.run_once(process=process, stop=self.stop)
            self.runs += 1
            log.info("process %s: %s", process.name, summary.line())
            self.notifier.status(f"{process.name}: {summary.line()}")
        except (LockBusy, OutsideWindow) as skipped:
            log.info("process %s: %s", process.name, skipped)
        except BgtaskexError as err:
            log.error("process %s: %s", process.name, err)
            self.notifier.status(f"{process.name}: error: {err}")
        except Exception:
            log.exception("process %s: unexpected error", process.name)
        finally:
            self.busy_since = None
            self.idle.set()

    def wake(self, queue: str) -> None:
        """An interactive task waits in `queue`: if the daemon is idle, run the process
        that serves the queue now instead of at its next trigger (inside its window)."""
        if self.stop.is_set() or not self.idle.is_set():
            return  # the run going on takes interactive tasks first anyway
        now = datetime.now().astimezone()
        for process in self.settings.scheduled:
            if not Routing.of(self.settings, process).serves(queue):
                continue
            if process.window is not None and process.window.window_end(now) is None:
                return
            job = self.scheduler.get_job(process.name)
            if job is not None and (job.next_run_time is None or job.next_run_time > now):
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
            self.schedule()
            log.info("config reloaded")
        self.notifier.send("READY=1", "STATUS=config reloaded")

    # -- signals and the watchdog ------------------------------------------------------

    def _on_stop(self, signum: int, _frame: object) -> None:
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
        """Run until a signal stops it; the exit code."""
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
                lambda: self.client.store, self.wake, self.settings.concurrency.poll, self.stop
            ).start()
            names = ", ".join(p.name for p in self.settings.scheduled)
            self.notifier.ready(f"serving {names}")
            log.info("daemon started (pid %s): %s", os.getpid(), names)
            self.scheduler.start()  # returns once a signal shut it down
            if not self.idle.wait(self.settings.stop_timeout):
                log.error(
                    "the current run did not stop within stop_timeout=%ss; exiting anyway "
                    "(the next run recovers it)",
                    self.settings.stop_timeout,
                )
                logging.shutdown()
                os._exit(1)  # the worker thread is still in a hook: do not wait for it
            log.info("daemon stopped after %s run(s)", self.runs)
            return 0
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.client.close()
