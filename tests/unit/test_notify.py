"""The systemd notify protocol (bgtaskex.notify.Notifier) against real AF_UNIX datagram
sockets; and, in-process with a stand-in client, the parts of the daemon's loop that a
subprocess cannot make deterministic: the watchdog (pings only while the loop is healthy)
and signal handlers landing in the middle of the scheduler's own code.

The daemon itself, as a subprocess under a fake NOTIFY_SOCKET, is in
tests/acceptance/test_daemon.py.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from apscheduler.triggers.interval import IntervalTrigger

import bgtaskex.daemon
from bgtaskex.config import Settings
from bgtaskex.daemon import Daemon
from bgtaskex.models import RunSummary
from bgtaskex.notify import Notifier
from bgtaskex.processes import Process
from bgtaskex.run.signals import StopRequest
from bgtaskex.runchild import InProcess

# -- helpers ---------------------------------------------------------------------------


def short_dir(tmp_path: Path) -> Path:
    """tmp_path, or a shorter directory when a socket path there would pass the 108-byte
    limit of sun_path."""
    if len(str(tmp_path / "notify.sock")) < 100:
        return tmp_path
    return Path(tempfile.mkdtemp(prefix="bgx"))


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A bound datagram socket on a path, and that path (what NOTIFY_SOCKET holds)."""
    path = str(short_dir(tmp_path) / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)


@pytest.fixture
def abstract_listener() -> Iterator[tuple[socket.socket, str]]:
    """A bound abstract datagram socket, and its "@name" address."""
    name = f"bgtaskex-test-{secrets.token_hex(6)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def fields(sock: socket.socket) -> list[str]:
    """The lines of the next datagram."""
    return sock.recv(4096).decode().split("\n")


def nothing_pending(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        sock.recv(4096)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(5)
    return False


# -- no socket: a no-op ----------------------------------------------------------------


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = Notifier(environ={})
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert notifier.send("READY=1") is False
    assert notifier.ready("serving") is False
    assert notifier.status("x") is False
    assert notifier.watchdog() is False
    assert notifier.reloading() is False
    assert notifier.stopping() is False


def test_empty_notify_socket_is_off() -> None:
    assert not Notifier(environ={"NOTIFY_SOCKET": ""}).enabled


def test_reads_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch, listener: tuple[socket.socket, str]
) -> None:
    sock, path = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier()
    assert notifier.enabled and notifier.address == path
    assert notifier.watchdog_interval == pytest.approx(0.2)
    assert notifier.watchdog()
    assert fields(sock) == ["WATCHDOG=1"]


def test_socket_that_nobody_listens_on_is_not_an_error(tmp_path: Path) -> None:
    missing = str(short_dir(tmp_path) / "gone.sock")
    notifier = Notifier(environ={"NOTIFY_SOCKET": missing})
    assert notifier.enabled
    assert notifier.ready("serving") is False  # no exception: a daemon must not die of it
    assert (
        Notifier(environ={"NOTIFY_SOCKET": "@bgtaskex-nobody-" + secrets.token_hex(6)}).send(
            "READY=1"
        )
        is False
    )


# -- the messages ----------------------------------------------------------------------


def test_messages_on_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    notifier = Notifier(environ={"NOTIFY_SOCKET": path})
    assert notifier.ready("serving default")
    assert fields(sock) == ["READY=1", "STATUS=serving default", f"MAINPID={os.getpid()}"]
    assert notifier.status("default: run 1a2b3c4d: 1 finished")
    assert fields(sock) == ["STATUS=default: run 1a2b3c4d: 1 finished"]
    assert notifier.watchdog()
    assert fields(sock) == ["WATCHDOG=1"]
    assert notifier.reloading()
    assert fields(sock) == ["RELOADING=1"]
    assert notifier.stopping()
    assert fields(sock) == ["STOPPING=1", "STATUS=stopping"]
    assert notifier.stopping("bye")
    assert fields(sock) == ["STOPPING=1", "STATUS=bye"]
    assert nothing_pending(sock)


def test_messages_on_an_abstract_socket(abstract_listener: tuple[socket.socket, str]) -> None:
    sock, address = abstract_listener
    notifier = Notifier(environ={"NOTIFY_SOCKET": address})
    assert notifier.ready("up")
    assert fields(sock) == ["READY=1", "STATUS=up", f"MAINPID={os.getpid()}"]
    assert notifier.stopping()
    assert fields(sock)[0] == "STOPPING=1"


def test_explicit_address_beats_the_environment(
    listener: tuple[socket.socket, str], tmp_path: Path
) -> None:
    sock, path = listener
    notifier = Notifier(path, environ={"NOTIFY_SOCKET": str(tmp_path / "elsewhere.sock")})
    assert notifier.status("here")
    assert fields(sock) == ["STATUS=here"]


# -- the watchdog interval ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "interval"),
    [
        ({"WATCHDOG_USEC": "400000"}, 0.2),
        ({"WATCHDOG_USEC": "120000000"}, 60.0),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid())}, 0.2),
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": "1"}, None),  # meant for another pid
        ({"WATCHDOG_USEC": "400000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_PID": str(os.getpid())}, None),
        ({"WATCHDOG_USEC": ""}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "-400000"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec_for_this_pid(
    environ: dict[str, str], interval: float | None
) -> None:
    notifier = Notifier(environ={"NOTIFY_SOCKET": "/run/unused.sock", **environ})
    if interval is None:
        assert notifier.watchdog_interval is None
    else:
        assert notifier.watchdog_interval == pytest.approx(interval)


# -- the daemon's watchdog loop ----------------------------------------------------------


class RecordingNotifier(Notifier):
    """A notifier that records what it would send."""

    def __init__(self) -> None:
        super().__init__("recorder", environ={})
        self.sent: list[tuple[str, ...]] = []

    def send(self, *fields: str) -> bool:
        self.sent.append(fields)
        return True

    @property
    def pings(self) -> int:
        return sum(1 for f in self.sent if f == ("WATCHDOG=1",))


class CountingStop(StopRequest):
    """A stop request that sets itself after `rounds` waits: the watchdog loop then ends
    after exactly that many rounds, without any real waiting."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.rounds = rounds

    def wait(self, timeout: float | None = None) -> bool:
        self.rounds -= 1
        if self.rounds < 0:
            self.set()
        return self.is_set()


class QuietStore:
    """A store whose wake-ups never name a queue (the daemon's wake-up thread)."""

    def wake_ups(self, timeout: float) -> Iterator[None]:
        while True:
            time.sleep(timeout)
            yield None

    def waiting_interactive_queues(self) -> list[str]:
        return []


class FakeClient:
    """Stands in for the daemon's Client: run_once blocks until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

        self.store = QuietStore()

    def run_once(self, **_kwargs: Any) -> RunSummary:
        self.entered.set()
        assert self.release.wait(10)
        return RunSummary(run_id="feedc0de")

    def close(self) -> None:
        pass


def make_daemon(settings: Settings) -> tuple[Daemon, RecordingNotifier, FakeClient]:
    notifier = RecordingNotifier()
    client = FakeClient()
    daemon = Daemon(lambda: (settings, client), notifier=notifier)  # type: ignore[arg-type,return-value]
    daemon.children = InProcess()  # the stand-in client runs in this process
    return daemon, notifier, client


def watchdog_rounds(daemon: Daemon, rounds: int) -> None:
    daemon.stop = CountingStop(rounds)
    daemon._watchdog(0.001)


def test_watchdog_pings_while_idle_and_not_when_a_run_is_stuck() -> None:
    settings = Settings(max_execution_time=30, stop_timeout=20)
    daemon, notifier, _ = make_daemon(settings)
    watchdog_rounds(daemon, 5)
    assert notifier.pings == 5  # idle: one ping a round

    notifier.sent.clear()
    daemon.busy_since = time.monotonic() - 5  # a run 5 s in: healthy
    watchdog_rounds(daemon, 3)
    assert notifier.pings == 3

    notifier.sent.clear()
    daemon.busy_since = time.monotonic() - (30 + 20 + 60 + 1)  # far past budget + stop_timeout
    watchdog_rounds(daemon, 3)
    assert notifier.pings == 0  # systemd's WatchdogSec then restarts the service


@pytest.fixture
def shifted_clock(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """bgtaskex.daemon's view of time.monotonic, moved forward by `clock.offset` s."""
    clock = SimpleNamespace(offset=0.0)
    real = time.monotonic
    fake_time = SimpleNamespace(monotonic=lambda: real() + clock.offset)
    monkeypatch.setattr(bgtaskex.daemon, "time", fake_time)
    return clock


def test_watchdog_keeps_pinging_during_a_healthy_run_of_the_global_budget(
    shifted_clock: SimpleNamespace,
) -> None:
    settings = Settings(max_execution_time=300, stop_timeout=20)
    daemon, notifier, client = make_daemon(settings)
    ticking = threading.Thread(target=daemon.tick, args=(Process("p", every=60),))
    ticking.start()
    try:
        assert client.entered.wait(10)
        shifted_clock.offset = 200  # the run is 200 s into its 300 s budget
        watchdog_rounds(daemon, 3)
        assert notifier.pings == 3
    finally:
        client.release.set()
        ticking.join(10)
    assert daemon.busy_since is None and daemon.runs == 1


def test_watchdog_keeps_pinging_during_a_healthy_run_of_a_process_with_a_longer_budget(
    shifted_clock: SimpleNamespace,
) -> None:
    long = Process("long", every=60, max_execution_time=600)
    settings = Settings(max_execution_time=30, stop_timeout=20, processes=(long,))
    daemon, notifier, client = make_daemon(settings)
    ticking = threading.Thread(target=daemon.tick, args=(long,))
    ticking.start()
    try:
        assert client.entered.wait(10)
        shifted_clock.offset = 200  # 200 s into a 600 s budget: healthy
        watchdog_rounds(daemon, 3)
        assert notifier.pings == 3
    finally:
        client.release.set()
        ticking.join(10)


# -- the daemon's signal handlers --------------------------------------------------------
#
# Python runs a signal handler in the main thread, between two bytecodes of whatever the
# main thread is doing, and the daemon's main thread runs APScheduler's loop. A handler
# that calls into the scheduler may therefore run in the middle of the scheduler's own
# code. The real daemon showed both failures below when SIGHUP or SIGTERM came right
# after READY=1 or a reload (about 1 start in 4): it hung with no run and no reload, or
# exited 1 with "internal error: JobLookupError: 'No job by the id of fast was found'".


class SignalWhileProcessingTheJob(IntervalTrigger):
    """Every 60 s; sends `signum` to this process the first time the scheduler's loop
    computes the job's next run (inside `_process_jobs`, with the due job in hand)."""

    def __init__(self, signum: int) -> None:
        super().__init__(seconds=60)
        self.signum = signum
        self.sent = False

    def get_next_fire_time(self, previous_fire_time: Any, now: Any) -> Any:
        if previous_fire_time is not None and not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signum)
            for _ in range(3):  # a few bytecodes: the Python-level handler runs here
                pass
        return super().get_next_fire_time(previous_fire_time, now)


@pytest.mark.timeout(30)
def test_sigterm_while_the_scheduler_processes_a_job_still_stops_gracefully() -> None:
    trigger = SignalWhileProcessingTheJob(signal.SIGTERM)

    class Signalled(Process):
        def trigger(self) -> Any:
            return trigger

    settings = Settings(stop_timeout=5, processes=(Signalled("p", every=60),))
    daemon, notifier, client = make_daemon(settings)
    client.release.set()
    assert daemon.serve() == 0
    assert trigger.sent
    assert ("STOPPING=1", "STATUS=stopping") in notifier.sent


def started_scheduler(daemon: Daemon) -> threading.Thread:
    """The daemon's scheduler loop (no jobs) in a background thread, once running."""
    loop = threading.Thread(target=daemon.scheduler.start, daemon=True)
    loop.start()
    give_up = time.monotonic() + 10
    while not daemon.scheduler.running:
        assert time.monotonic() < give_up, "the scheduler did not start"
        time.sleep(0.01)
    return loop


@pytest.mark.parametrize(
    ("handler", "signum"),
    [("_on_hup", signal.SIGHUP), ("_on_stop", signal.SIGTERM)],
)
def test_signal_handler_never_waits_for_a_lock_the_interrupted_loop_may_hold(
    handler: str, signum: int
) -> None:
    daemon, _, _ = make_daemon(Settings())
    loop = started_scheduler(daemon)
    # The lock the loop holds inside Event.wait()/clear() (BlockingScheduler._main_loop).
    loop_lock = daemon.scheduler._event._cond

    def interrupted_loop() -> None:
        with loop_lock:  # where the signal landed
            getattr(daemon, handler)(signum, None)

    interrupted = threading.Thread(target=interrupted_loop, daemon=True)
    interrupted.start()
    interrupted.join(0.5)
    stuck = interrupted.is_alive()
    if not stuck and daemon.scheduler.running:
        daemon.scheduler.shutdown(wait=False)
        loop.join(5)
    assert not stuck, f"the {handler} handler is blocked on the scheduler loop's lock"
