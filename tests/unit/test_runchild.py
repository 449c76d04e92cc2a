"""The daemon's run children (bgtaskex.runchild.Children) on real forked processes."""

from __future__ import annotations

import io
import logging
import os
import threading
import time
from typing import Any

from bgtaskex.processes import Process
from bgtaskex.runchild import Children, ChildRun


class _Sleeper:
    """A client whose run never ends by itself: the child is there until it is killed."""

    def forked(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run_once(self, **_: Any) -> None:
        # A grandchild keeps the report pipe open a while after the child is killed, so
        # the forking thread is still reading it when the stop reaps the child.
        if os.fork() == 0:
            time.sleep(1.5)
            os._exit(0)
        time.sleep(60)


def test_a_child_killed_and_reaped_by_a_second_stop_is_reported_not_raised() -> None:
    """A second stop (or stop_timeout) kills the child and reaps it from another thread
    while the forking thread waits for it: that thread reports a killed child instead
    of dying on ECHILD with a traceback in the daemon's log."""
    children = Children()
    ended: list[ChildRun | BaseException] = []

    def fork_and_wait() -> None:
        try:
            ended.append(children.run(_Sleeper(), Process("p"), None, threading.Event()))  # type: ignore[arg-type]
        except BaseException as err:
            ended.append(err)

    waiter = threading.Thread(target=fork_and_wait)
    waiter.start()
    give_up = time.monotonic() + 10
    while children.pid is None and time.monotonic() < give_up:
        time.sleep(0.01)
    assert children.pid is not None, "the child was not forked"
    children.kill()
    waiter.join(10)
    assert not waiter.is_alive()
    assert len(ended) == 1 and isinstance(ended[0], ChildRun), ended
    assert ended[0].died is not None and not ended[0].ran


class _Summary:
    progressed = True

    def line(self) -> str:
        return "run 0: 0 finished"


class _Quick:
    """A client whose run ends at once (the child then logs its summary line)."""

    def forked(self) -> None:
        pass

    def close(self) -> None:
        pass

    def run_once(self, **_: Any) -> _Summary:
        return _Summary()


def _pipe_bytes(fd: int) -> int:
    import fcntl
    import struct
    import termios

    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


def test_a_fork_while_another_thread_writes_a_log_line_does_not_hang_the_child() -> None:
    """The daemon's log handler is on the "bgtaskex" logger (cli/logs.py), its stream a
    buffered stderr. A thread of the daemon half-way through a log line at the fork holds
    the stream's buffer lock, which the child inherits held: the child's own log line
    (or its flush at exit) would wait on it for ever, and the daemon's tick on the child
    (the every-1s process that stopped running in CI). The fork waits for every handler's
    lock, so no line is half-written when it happens. Made certain here: the writer is
    stuck on a full pipe until the fork has happened (or 1 s has passed)."""
    read_end, write_end = os.pipe()
    stream = io.TextIOWrapper(io.BufferedWriter(io.FileIO(write_end, "w")), line_buffering=True)
    logger = logging.getLogger("bgtaskex")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    children = Children()

    def write() -> None:
        logging.getLogger("bgtaskex.wakeup").info("x" * 200_000)

    def drain() -> None:  # from the fork on (or after 1 s: the fork waits for the writer)
        until = time.monotonic() + 1.0
        while children.pid is None and time.monotonic() < until:
            time.sleep(0.005)
        while os.read(read_end, 65536):
            pass

    writer = threading.Thread(target=write, daemon=True)
    drainer = threading.Thread(target=drain, daemon=True)
    try:
        writer.start()
        give_up = time.monotonic() + 10
        while _pipe_bytes(read_end) < 4096 and time.monotonic() < give_up:
            time.sleep(0.01)  # the writer is in its write, the pipe full behind it
        assert writer.is_alive()
        drainer.start()
        ended = children.run(_Quick(), Process("p"), 10.0, threading.Event())  # type: ignore[arg-type]
        assert ended.died is None and ended.ran, ended
        writer.join(10)
        assert not writer.is_alive()
    finally:
        logger.handlers[:], level, logger.propagate = saved
        logger.setLevel(level)
        stream.close()  # the drainer reads to the end of the pipe
        if drainer.ident is not None:
            drainer.join(10)
        os.close(read_end)
