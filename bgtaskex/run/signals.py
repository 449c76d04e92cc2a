"""Stopping on a signal, for `run-once` and the daemon alike: the first SIGTERM or SIGINT
lets the current hook finish and starts nothing new (`Action.should_stop()` turns True);
a second one exits at once, like a crash, which the next run recovers from."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters


class StopRequest(threading.Event):
    """Set when a run (or the daemon) is asked to stop; `signum` says by which signal."""

    signum: int | None = None


def stop_or_exit(stop: StopRequest, signum: int, logger: logging.Logger = log) -> None:
    """What a stop signal does: set `stop` the first time, exit at once (128 + signum)
    the second. Called from a signal handler."""
    if stop.is_set():
        logger.warning("signal %s again: exiting now", signum)
        os._exit(128 + signum)
    stop.signum = signum
    stop.set()
    logger.warning("signal %s: stopping after the current hook (again to exit now)", signum)


@contextmanager
def stop_on_signals(stop: StopRequest, signals: Sequence[int]) -> Iterator[None]:
    """While the block runs, each of `signals` goes to `stop_or_exit`. Only the main
    thread can do this (elsewhere the block runs without handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_signal(signum: int, _frame: object) -> None:
        stop_or_exit(stop, signum)

    previous = {signum: signal.signal(signum, on_signal) for signum in signals}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
