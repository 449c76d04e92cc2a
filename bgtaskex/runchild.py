"""The daemon's runs, each in a child process (docs/semantics.md#the-hard-limit).

The daemon forks (it has imported everything already, so a run starts within
milliseconds), the child does the run and exits; its memory and whatever it leaked go
with it. The child's own watchdog ends a hook that overruns the deadline by `kill_after`
(exit 7); the daemon enforces the same limit from outside with SIGKILL, a few seconds
later (`GRACE`), for what the child's watchdog cannot end (a planner, a C call holding
the GIL). A child that dies for any reason is logged, and the daemon goes on: the next
run recovers its task as after a crash (one that died in its planner held none; the
child marks its planner's call in memory it shares with the daemon).

The child dies with the daemon (Linux: PR_SET_PDEATHSIG). Signals: the child ignores
SIGTERM, SIGINT and SIGHUP (a terminal's Ctrl-C or systemd's
SIGTERM to the whole group reach it too): the daemon forwards a stop as SIGUSR1 (the
run stops after the current hook) and a second one as SIGKILL.
"""

from __future__ import annotations

import logging
import mmap
import os
import select
import signal
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, NoReturn

from .client import Client
from .exceptions import BgtaskexError, LockBusy, OutsideWindow
from .processes import Process
from .run.observer import RunObserver
from .run.signals import StopRequest

log = logging.getLogger("bgtaskex.daemon")

#: Seconds past the deadline + kill_after before the daemon kills a run's child itself.
GRACE = 5.0
STOP_SIGNAL = signal.SIGUSR1  # the daemon's "stop after the current hook" to its child
#: The reports of a child that did a run: "stalled" when it moved no task on.
_RAN = ("ran", "stalled")
_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, STOP_SIGNAL}


@dataclass(frozen=True, slots=True)
class ChildRun:
    """How a run's child ended: its status line (None when it reported none) and
    whether it died (killed, or exited other than 0)."""

    line: str | None
    ran: bool  # it did a run (not skipped: lock held, outside the window, an error)
    died: str | None  # how it died, for the log; None for a normal end
    in_planner: bool = False  # it died in the process's planner: it held no task
    progressed: bool = True  # its run moved a task on (RunSummary.progressed)


class Children:
    """The run child of a daemon (one at a time) and the forwarding of stops to it."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self._guard = threading.Lock()
        # Shared with each child (an anonymous shared mapping survives the fork): 1
        # while the child's run is in its planner (`RunObserver.planner`).
        self._planning = mmap.mmap(-1, 1)

    def run(
        self, client: Client, process: Process, limit: float | None, stop: threading.Event
    ) -> ChildRun:
        """Fork a child that does `client.run_once(process=process)`; wait for it, for
        at most `limit` seconds (then SIGKILL; None: no limit)."""
        read_end, write_end = os.pipe()
        parent = os.getpid()
        self._planning[0] = 0
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, _BLOCKED)
        handlers = _all_handlers()
        for handler in handlers:  # no other thread is half-way through writing a log line
            handler.acquire()
        try:
            pid = os.fork()
            if pid == 0:  # (logging gave the child fresh handler locks)
                os.close(read_end)
                _child(client, process, write_end, parent, self._planning)  # never returns
            with self._guard:
                self.pid = pid
        finally:
            for handler in handlers:
                handler.release()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        os.close(write_end)
        if stop.is_set():  # a stop came while forking
            self.forward(second=False)
        try:
            return self._wait(pid, read_end, limit)
        finally:
            os.close(read_end)
            with self._guard:
                self.pid = None

    def forward(self, *, second: bool) -> None:
        """A stop signal to the daemon: the child's run stops after the current hook
        (the second: it is killed). Safe from a signal handler."""
        pid = self.pid
        if pid is not None:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if second else STOP_SIGNAL)
            if second:  # the daemon exits now: reaped, the child is certainly dead
                with suppress(ChildProcessError):
                    os.waitpid(pid, 0)

    def kill(self) -> None:
        self.forward(second=True)

    def _wait(self, pid: int, read_end: int, limit: float | None) -> ChildRun:
        """Read the child's report until it exits (its end of the pipe closes), or kill
        it once `limit` seconds have passed."""
        began = time.monotonic()
        report = b""
        killed = False
        while True:
            left = None if limit is None else limit - (time.monotonic() - began)
            if left is not None and left <= 0:
                with suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _, _ = select.select([read_end], [], [], left)
            if ready:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                report += chunk
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # reaped by `kill`: the daemon is stopping at once
            return ChildRun(None, False, "was killed: the daemon is stopping")
        kind, _, line = report.decode(errors="replace").partition(" ")
        died = None
        if killed:
            died = f"was killed after {limit:.0f}s (the deadline + kill_after + {GRACE:g}s)"
        elif os.WIFSIGNALED(status):
            died = f"was killed by signal {os.WTERMSIG(status)}"
        elif os.WEXITSTATUS(status) != 0:
            died = f"exited with code {os.WEXITSTATUS(status)}"
        planning = died is not None and self._planning[0] == 1
        return ChildRun(line or None, kind in _RAN, died, planning, kind != "stalled")


def _all_handlers() -> list[logging.Handler]:
    """Every handler of every logger (the daemon's are on "bgtaskex" and "apscheduler",
    not the root) and the last resort. A thread writing a log line holds its handler's
    lock, and under it the stream's buffer lock, which a child forked then would
    inherit held (logging renews the handler locks in a child, not the stream's): the
    child's first line, or its flush at exit, would wait for ever."""
    loggers: list[Any] = [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
    found: dict[int, logging.Handler] = {}
    for logger in loggers:
        for handler in getattr(logger, "handlers", ()):  # a PlaceHolder has none
            found.setdefault(id(handler), handler)
    if logging.lastResort is not None:
        found.setdefault(id(logging.lastResort), logging.lastResort)
    return list(found.values())


class InProcess:
    """The runs in the daemon's own process, as before run children (where there is no
    `os.fork`, and for tests of the daemon with a stand-in client): no hard limit from
    outside, stops through the daemon's own stop request."""

    def run(
        self, client: Client, process: Process, limit: float | None, stop: threading.Event
    ) -> ChildRun:
        kind, line = _run(client, process, stop)
        return ChildRun(line or None, kind in _RAN, None, progressed=kind != "stalled")

    def forward(self, *, second: bool) -> None:
        pass

    def kill(self) -> None:
        pass


def _child(
    client: Client, process: Process, report: int, parent: int, planning: mmap.mmap
) -> NoReturn:
    """The child: its own signals, its own connections, the run, its report, exit."""
    code = 1
    try:
        _die_with(parent)
        stop = StopRequest()
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        signal.signal(STOP_SIGNAL, lambda _signum, _frame: stop.set())
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _BLOCKED)
        client.forked()
        kind, line = _run(client, process, stop, _Planning(planning))
        os.write(report, f"{kind} {line}".encode())
        code = 0
    except BaseException:  # the child never returns into the daemon's code
        log.exception("process %s: the run's process failed", process.name)
    finally:
        # No clean-up that may wait on a lock another thread of the daemon held at the
        # fork (the connection pool's, a handler's): the run's writes are committed
        # and the report written; the exit closes the rest.
        for stream in (sys.stdout, sys.stderr):
            with suppress(Exception):
                stream.flush()
        os._exit(code)


def _libc() -> Any:
    """The C library, loaded once by the daemon (a child then pays nothing for it)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _libc() if sys.platform.startswith("linux") else None


def _die_with(parent: int) -> None:
    """Linux: SIGKILL this child when the daemon dies (kill -9 included), as a run in
    the daemon's own process died with it (the forking thread waits for the child, so
    it outlives it). Elsewhere the child ends with its run."""
    if _LIBC is None:
        return
    _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the daemon died before prctl
        os._exit(1)


class _Planning(RunObserver):
    """Keeps the daemon told (one shared byte) whether the child is in its planner."""

    def __init__(self, planning: mmap.mmap) -> None:
        self._planning = planning

    def planner(self, running: bool) -> None:
        self._planning[0] = 1 if running else 0


def _run(
    client: Client, process: Process, stop: threading.Event, observer: RunObserver | None = None
) -> tuple[str, str]:
    """The run, as the daemon's tick did it in its own process: what to report."""
    try:
        summary = client.run_once(process=process, stop=stop, observer=observer)
    except (LockBusy, OutsideWindow) as skipped:
        log.info("process %s: %s", process.name, skipped)
        return "skipped", ""
    except BgtaskexError as err:
        log.error("process %s: %s", process.name, err)
        return "error", f"error: {err}"
    except Exception:
        log.exception("process %s: unexpected error", process.name)
        return "error", ""
    log.info("process %s: %s", process.name, summary.line())
    return "ran" if summary.progressed else "stalled", summary.line()
