"""Who holds a claim: the name a run writes on the tasks it takes, and whether that
process is certainly gone.

A claim's name is `host:pid:mark/worker`, where `mark` ties the pid to one process for
good: the host's boot id, the pid namespace and the process's start time (Linux). A
lease outlives a run killed with SIGKILL; a run on the same host (same name, same boot,
same pid namespace) can tell from the mark that the holder is dead (its pid is gone, or
now names another process) and take the task over at once instead of waiting for the
lease to run out. A holder on another host, or one that cannot be told apart (another
boot id: a reboot, or a cloned machine of the same name), is never presumed dead.

The name ends with `/run.worker`: a run of this very process that ended (an error took
it out in the middle of a task, and the lease could not be ended) is told from a live
one by the runs this process has going (`running`).
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: The host part of a holder name, at most: with the pid (7 digits), the mark (about 36
#: characters) and the `/run.worker` suffix (12), the name fits the 100 characters of
#: `claimed_by` and the run record's `holder`. A longer host name (Linux allows 64) cut
#: there is harmless; a name cut in its mark would read as a dead process.
HOST_PART = 40

_runs: set[str] = set()  # the runs of this process going on now
_runs_guard = threading.Lock()


@contextmanager
def running(run_id: str) -> Iterator[None]:
    """Count run `run_id` as going on in this process for the block."""
    with _runs_guard:
        _runs.add(run_id)
    try:
        yield
    finally:
        with _runs_guard:
            _runs.discard(run_id)


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii", errors="replace") as handle:
            return handle.read().strip()
    except OSError:
        return ""


@functools.cache
def _boot_id() -> str:
    return _read("/proc/sys/kernel/random/boot_id").replace("-", "")[:12]


def _pid_namespace(pid: int | str = "self") -> str:
    try:
        link = os.readlink(f"/proc/{pid}/ns/pid")  # "pid:[4026531836]"
    except OSError:
        return ""
    return link.partition("[")[2].rstrip("]")


def _start_time(pid: int | str = "self") -> str:
    """The process's start time in clock ticks since boot ("" where unknown, or for a
    zombie: dead, not yet reaped, e.g. a daemon's run child killed as the daemon exits)."""
    stat = _read(f"/proc/{pid}/stat")
    # The command name (field 2) may hold spaces and parentheses: split after its end.
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 and fields[0] != "Z" else ""


@functools.cache
def _mark_of_self() -> str:
    return f"{_boot_id()}.{_pid_namespace()}.{_start_time()}"


# A forked child is another process: its own start time in its claims' names.
os.register_at_fork(after_in_child=_mark_of_self.cache_clear)


def holder_name() -> str:
    """This process's claim name: `host:pid:mark` (see the module docstring)."""
    return f"{_host()}:{os.getpid()}:{_mark_of_self()}"


def host_name() -> str:
    """This host's name, as `socket.gethostname()` gives it (both read uname(2)), without
    importing `socket`: the idle `run-once` records it."""
    return os.uname().nodename


def _host() -> str:
    """This host's name as a holder name gives it (`HOST_PART`)."""
    return host_name()[:HOST_PART]


def operator_name() -> str:
    """`user@host` of who runs this process (who paused a queue), as well as it can tell."""
    import getpass  # not on the run's path

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return f"{user}@{host_name()}"[:255]


def holder_is_gone(claimed_by: str | None) -> bool:
    """Whether the process named by `claimed_by` (a `holder_name()`, maybe with a
    `/run.worker` suffix) is certainly dead: it ran on this host, in this boot, and its
    pid no longer names it (or it is this process, and its run is over). False whenever
    that cannot be told."""
    if not claimed_by:
        return False
    host, _, rest = claimed_by.partition(":")
    pid_text, _, mark = rest.partition(":")
    mark, _, worker = mark.partition("/")
    if host != _host() or not pid_text.isdigit():
        return False
    boot, _, rest = mark.partition(".")
    namespace, _, started = rest.partition(".")
    if not (boot and namespace and started) or namespace != _pid_namespace():
        return False  # another container, or not Linux: cannot tell
    if boot != _boot_id():
        # A reboot, or another machine of the same name (a cloned image): cannot tell.
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        if started != _start_time():
            return True
        run_id = worker.partition(".")[0]
        with _runs_guard:
            return bool(run_id) and run_id not in _runs
    current = _start_time(pid)
    return current != started  # "" : no such process
