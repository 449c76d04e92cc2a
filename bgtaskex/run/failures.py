"""Why an `execute` died, when it may be tried again, and the hard limit that kills a
hook overrunning the deadline (docs/semantics.md#retry-backoff, #the-hard-limit).

- `failure_text`: the `last_failure` of an exception ("<Type>: <message>").
- `retry_delay`: the backoff before the next execute after a death: the class's (or the
  settings') `retry_delay`, doubled at each death, capped by `max_retry_delay`, +-10%
  (at the cap: -10%, the cap is a maximum).
- `Overrun`: what the watchdog thread (`claims.Heartbeat`) calls once a hook has run
  `kill_after` past the deadline: one log line, the overrun recorded if the database
  answers within `RECORD_WITHIN` seconds, then `os._exit(KILLED_EXIT)`, like PHP's
  max_execution_time ends the original. The next run recovers the task as after a crash.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn

from ..action import Action
from ..config import MAX_DURATION, Settings
from ..models import ActionChange, Change, NewEvent
from ..store.contract import RunStorage

log = logging.getLogger("bgtaskex.runner")  # a stable name, for log filters

#: The exit code of a run killed because a hook overran the deadline by `kill_after`.
KILLED_EXIT = 7
#: How long the killed run may take to record the overrun before it exits anyway.
RECORD_WITHIN = 2.0
CRASH = "crash"
#: The last_failure of an execute ended by the run's own storage failing under it (a
#: checkpoint that could not reach the database): no death is counted for it.
STORAGE = "storage: "


def failure_text(err: BaseException, storage: BaseException | None = None) -> str:
    """The `last_failure` of an execute that raised `err` (`storage`: the run's own write
    that failed under it)."""
    if storage is not None:
        return f"{STORAGE}{type(storage).__name__}: {storage}"[:2000]
    return f"{type(err).__name__}: {err}"[:2000]


def retry_delay(action: type[Action], settings: Settings, death: int) -> float:
    """Seconds before execute is tried again after its `death`-th death (1 = the first):
    0 when the delay is 0 (retry at the next run, as the original)."""
    base = float(action.retry_delay if action.retry_delay is not None else settings.retry_delay)
    if base <= 0:
        return 0.0
    cap = float(
        action.max_retry_delay if action.max_retry_delay is not None else settings.max_retry_delay
    )
    delay = min(cap, base * 2.0 ** min(max(death - 1, 0), 62))
    if delay <= 0:
        return 0.0
    # +-10% jitter after the cap, never above it (between 90% and 100% of the cap there):
    # tasks that died together must not retry together for ever once they reach it.
    return delay * random.uniform(0.9, min(1.1, cap / delay))


def not_before(delay: float) -> datetime | None:
    """The `not_before` of a delay in seconds (None for none or NaN), at most
    `MAX_DURATION` (100 years) ahead: an action's own `retry_delay`, the doubling after
    many deaths or a snooze cannot leave what a datetime holds."""
    if not delay > 0:
        return None
    return datetime.now(UTC) + timedelta(seconds=min(delay, MAX_DURATION))


@dataclass(frozen=True, slots=True)
class Overrun:
    """A hook under the hard limit: what to say, and to write, if it overruns it."""

    store: RunStorage
    run_id: str
    task_id: int
    task_name: str
    status: str  # the task's status while the hook runs
    rank: int
    ref: str
    hook: str
    deadline: float  # time.time() stamp
    kill_after: float
    token: int | None
    #: execute: the retry delay of this death, computed only if it comes (None: another hook)
    retry_in: Callable[[], float] | None

    def kill_at(self) -> float:
        """The time.monotonic() at which the hook is killed."""
        return time.monotonic() + (self.deadline + self.kill_after - time.time())

    def kill(self) -> NoReturn:
        """Log it (one line), record it within RECORD_WITHIN seconds if the database
        answers, and exit now."""
        overrun = time.time() - self.deadline
        log.critical(
            "run %s: task %s (%s): %s of action %s (%s) overran the deadline by %.1fs "
            "(kill_after=%gs): killing the run (exit %s); the next run recovers the task",
            self.run_id,
            self.task_id,
            self.task_name,
            self.hook,
            self.rank,
            self.ref,
            overrun,
            self.kill_after,
            KILLED_EXIT,
        )
        writer = threading.Thread(target=self._record, args=(overrun,), daemon=True)
        writer.start()
        writer.join(RECORD_WITHIN)  # a database that does not answer: the next run says crash
        logging.shutdown()
        os._exit(KILLED_EXIT)

    def _record(self, overrun: float) -> None:
        why = (
            f"overrun: {self.hook} ran {overrun:.1f}s past the deadline "
            f"(kill_after={self.kill_after:g}s)"
        )
        actions: tuple[ActionChange, ...] = ()
        when = None
        if self.retry_in is not None:
            actions = (ActionChange(self.rank, last_failure=why),)
            when = not_before(self.retry_in())
        event = NewEvent(self.rank, self.status, self.status, f"{why}: killed")
        change = Change(
            self.task_id,
            self.run_id,
            actions=actions,
            events=(event,),
            token=self.token,
            not_before=when,
        )
        with suppress(Exception):  # refused or unreachable: the next run says crash
            self.store.apply(change)
        with suppress(Exception):  # unreachable: its record reads "died" all the same
            self.store.run_killed(self.run_id, f"killed (exit {KILLED_EXIT}): {why}")
