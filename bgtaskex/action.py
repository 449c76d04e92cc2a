"""The `Action` base class that users subclass, and the context the runner gives it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from .models import Progress

if TYPE_CHECKING:
    from .config import Settings


class Cancelled(BaseException):
    """Raised inside `execute` by `checkpoint()` when the task was cancelled meanwhile.

    A BaseException, so a broad `except Exception` in an action does not swallow it; let
    it propagate (clean up in `finally`).
    """


class ActionContext(Protocol):
    """What the runner lends an action; an action never sees the store."""

    def checkpoint(self, params: dict[str, Any], progress: Progress | None) -> None: ...

    def report(self, progress: Progress) -> None: ...

    def should_stop(self) -> bool: ...

    def note(self, message: str) -> None: ...

    @property
    def settings(self) -> Settings: ...


class _Detached:
    """Outside a run (e.g. in a unit test of an action) nothing is saved."""

    def checkpoint(self, params: dict[str, Any], progress: Progress | None) -> None:
        pass

    def report(self, progress: Progress) -> None:
        pass

    def should_stop(self) -> bool:
        return False

    def note(self, message: str) -> None:
        import logging

        logging.getLogger("bgtaskex.action").info("%s", message)

    @property
    def settings(self) -> Settings:
        from .config import load_settings

        return load_settings()


class Action:
    """One step of a task. Subclass it and override the hooks you need.

    * `init_params()` is called once, before the first `execute`. Return False when
      there is nothing to do: the action is skipped.
    * `change_params_on_error()` is called when the previous `execute` died (exception,
      kill -9, power cut). Adapt `self.params` so a retry can succeed and return True,
      or return False to give up: the action fails.
    * `execute(deadline)` works until it is done (return True) or until `deadline`, a
      `time.time()` timestamp, is near (return False: the task pauses and the next run
      calls `execute` again).

    `self.params` is a JSON object saved whenever a hook returns normally and at each
    `checkpoint()`; after an exception or a crash the last saved params are restored.
    Do not override `__init__`: prepare state in `init_params`.
    """

    #: Override in a subclass to document what the action does.
    description: ClassVar[str] = ""
    #: How many brutal deaths of `execute` this action survives before it fails; None
    #: means the run's `max_attempts` setting. An action whose recovery makes progress
    #: (e.g. halving a chunk) may need more.
    max_attempts: ClassVar[int | None] = None
    #: Seconds before `execute` is tried again after it died (raised, was killed, or the
    #: process died), doubled at each death up to `max_retry_delay`, with +-10% jitter;
    #: None means the run's `retry_delay` / `max_retry_delay` settings, 0 the next run.
    retry_delay: ClassVar[float | None] = None
    max_retry_delay: ClassVar[float | None] = None

    def __init__(
        self, params: dict[str, Any] | None = None, *, context: ActionContext | None = None
    ) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self._context: ActionContext = context or _Detached()
        self._progress: Progress | None = None
        #: Why the last `execute` of this action died, for `change_params_on_error`:
        #: "crash" (the process died), "overrun: ..." (killed by `kill_after`), or
        #: "<ExceptionType>: <message>"; None when it did not die.
        self.last_failure: str | None = None
        self._snooze_until: float | None = None

    def init_params(self) -> bool:
        """Prepare params before the first execute; False means nothing to do."""
        return True

    def change_params_on_error(self) -> bool:
        """Adapt params after execute died; False gives up. By default, retry as is."""
        return True

    def execute(self, deadline: float) -> bool:
        """Do a chunk of work; True when finished, False when paused by the deadline."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement execute()")

    def snooze(self, seconds: float) -> bool:
        """Pause the task for `seconds` without counting an attempt: `return
        self.snooze(60)` from `execute` saves the params, and the task is `paused`, not
        due again before then (e.g. to wait for an external system). Returns False, the
        result of an execute that pauses; it is honoured only when execute returns it.
        ValueError for a negative, infinite or NaN `seconds` or one over 100 years."""
        from .config import MAX_DURATION  # not at import: an action module stays light

        seconds = float(seconds)
        if not 0 <= seconds <= MAX_DURATION:  # NaN and infinity too
            raise ValueError(f"snooze takes seconds from 0 to 100 years, not {seconds!r}")
        self._snooze_until = time.time() + seconds
        return False

    def checkpoint(self) -> None:
        """Save `self.params` (and the last progress) now, so a crash later in this
        execute keeps this much work. Raises `Cancelled` if the task was cancelled."""
        self._context.checkpoint(self.params, self._progress)

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the action is (`done` of `total` units, and a short message).

        Shown live by `run-once --progress`; saved with the params at the next
        checkpoint or hook return, for `list` and `show`.
        """
        if message is not None:
            message = str(message)[:200]
        self._progress = Progress(float(done), None if total is None else float(total), message)
        self._context.report(self._progress)

    def should_stop(self) -> bool:
        """True when the run asks the action to stop early (e.g. the service is stopping):
        save what you have and return False."""
        return self._context.should_stop()

    def note(self, message: str) -> None:
        """Add a line to the task's history now (shown by `bgtaskex show`), e.g. a row
        that had to be skipped."""
        self._context.note(str(message)[:2000])

    @property
    def settings(self) -> Settings:
        """The settings of the run executing this action (config file, environment and
        options); outside a run, those of the environment."""
        return self._context.settings

    @staticmethod
    def time_left(deadline: float) -> float:
        """Seconds until `deadline` (negative once it has passed)."""
        return deadline - time.time()

    @classmethod
    def overrides_init_params(cls) -> bool:
        """Whether `init_params` does anything: when it does not, nothing can die in it,
        so the runner does not write the `starting` status before calling it."""
        return cls.init_params is not Action.init_params

    @classmethod
    def overrides_change_params_on_error(cls) -> bool:
        """Whether `change_params_on_error` does anything: when it does not (retry as
        is), the runner goes straight back to `execute`, without the `recovering` write."""
        return cls.change_params_on_error is not Action.change_params_on_error
