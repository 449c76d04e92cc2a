"""Noticing the wall clock step backward (`date -s`, an NTP step, a VM restore).

APScheduler 3 waits for wall-clock times: after the clock steps back 600 s, every
process would wait 600 s more. `ClockWatch` compares the wall clock's progress with the
monotonic clock's, once a second, and reports a backward step; the daemon then moves
each job's next run time back by the step (a cron job's to its first trigger time at or
after that), so each process keeps its place in real time (`Daemon.clock_stepped_back`).
A forward step needs nothing: APScheduler sees the triggers late and runs each once
(coalesced, within the misfire grace) or logs it as missed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["ClockWatch"]

log = logging.getLogger(__name__)

STEP = 1.0  # seconds: a smaller backward jump is not worth a reschedule


class ClockWatch:
    """Calls `on_step(seconds)` when the wall clock went back by `threshold` or more
    since the previous `check` (compared with the monotonic clock)."""

    def __init__(
        self,
        on_step: Callable[[float], None],
        threshold: float = STEP,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_step = on_step
        self.threshold = threshold
        self.wall = wall
        self.monotonic = monotonic
        self._last = (wall(), monotonic())

    def check(self) -> float:
        """The backward step since the previous check, in seconds (0.0: none); reported
        to `on_step` when it reaches the threshold."""
        wall, mono = self.wall(), self.monotonic()
        last_wall, last_mono = self._last
        self._last = (wall, mono)
        back = (mono - last_mono) - (wall - last_wall)
        if back < self.threshold:
            return 0.0
        self.on_step(back)
        return back

    def start(self, stop: threading.Event, period: float = 1.0) -> threading.Thread:
        """Check every `period` seconds on a daemon thread until `stop` is set."""

        def loop() -> None:
            while not stop.wait(period):
                try:
                    self.check()
                except Exception:  # a job removed meanwhile, a scheduler shutting down
                    log.exception("clock watch: could not reschedule after a clock step")

        thread = threading.Thread(target=loop, name="bgtaskex-clockwatch", daemon=True)
        thread.start()
        return thread
