"""Interactive tasks without waiting for the next tick.

The daemon's processes run on their triggers (every minute by default). An interactive
task queued meanwhile should start at once: on PostgreSQL `enqueue` NOTIFYs and this
thread, LISTENing, hears it within milliseconds; on every backend it also polls, every
`concurrency.poll` seconds, for interactive tasks queued and not yet started (one index
range), which catches what a notification alone would miss (a run was busy). Each queue
found wakes the process that serves it (`Daemon.wake`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Protocol

from .exceptions import BgtaskexError

log = logging.getLogger(__name__)


class WakeUpSource(Protocol):
    """What the wake-ups read (the daemon's client): notifications, and the queues of
    interactive tasks waiting."""

    def wake_ups(self, timeout: float) -> Iterator[str | None]: ...

    def waiting_interactive_queues(self) -> list[str]: ...


class WakeUps:
    """A thread that calls `wake(queue, notified)` for each queue holding a new
    interactive task: `notified` when a notification named it (a task just enqueued),
    False when the poll found it waiting."""

    def __init__(
        self,
        source: Callable[[], WakeUpSource],
        wake: Callable[[str, bool], object],
        poll: float,
        stop: threading.Event,
    ) -> None:
        self.source, self.wake, self.poll, self.stop = source, wake, poll, stop
        self._thread = threading.Thread(target=self._serve, name="bgtaskex-wakeups", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                self._listen(self.source())
            except BgtaskexError as err:
                log.warning("wake-ups: %s; trying again in %ss", err, self.poll)
                self.stop.wait(self.poll)
            except Exception as err:  # a driver error outside the store's translation
                log.warning("wake-ups: %s: %s; trying again", type(err).__name__, err)
                self.stop.wait(self.poll)

    def _listen(self, source: WakeUpSource) -> None:
        for queue in source.wake_ups(self.poll):
            if self.stop.is_set() or source is not self.source():  # stopping, or reloaded
                return
            queues = [queue] if queue is not None else source.waiting_interactive_queues()
            for name in dict.fromkeys(queues):
                self.wake(name, queue is not None)  # True: a new task's notification
