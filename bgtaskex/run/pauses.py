"""Whether the queue of the task a worker holds got paused (`bgtaskex pause`) since the
worker picked it: checked before each next hook of the task (each next action of a
chain, `execute` after `init_params` or `change_params_on_error`), read at most once a
second per worker. The pick itself reads the pauses live (the due query passes over the
paused queues), so a task is known not paused as it is picked."""

from __future__ import annotations

import time

from ..store.contract import RunStorage

#: Seconds a worker trusts what it last read of its task's queue: a pause stops a task
#: before the first hook that starts this long after the pick or the last read.
CHECK_EVERY = 1.0


class PauseWatch:
    """The pause state of the current task's queue, for one worker."""

    def __init__(self, store: RunStorage, every: float = CHECK_EVERY) -> None:
        self.store, self.every = store, every
        self._queue: str | None = None
        self._read_at = 0.0
        self._paused = False

    def picked(self, queue: str) -> None:
        """A task of `queue` was just picked: that queue was not paused then."""
        self._queue, self._read_at, self._paused = queue, time.monotonic(), False

    def paused(self, queue: str) -> bool:
        """Whether `queue` is paused, as read at most `every` seconds ago."""
        now = time.monotonic()
        if queue != self._queue or now - self._read_at >= self.every:
            self._queue, self._read_at = queue, now
            self._paused = self.store.queue_paused(queue)
        return self._paused
