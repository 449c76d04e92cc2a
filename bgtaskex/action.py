"""The `Action` base class that users subclass, and the context the runner gives it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

Checkpoint = Callable[[dict[str, Any]], None]


def _no_checkpoint(params: dict[str, Any]) -> None:
    """Outside a run (e.g. in a unit test of an action) a checkpoint saves nothing."""


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

    #: Override in a subclass to document what the action does (shown by `bgtaskex show`).
    description: ClassVar[str] = ""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        *,
        checkpoint: Checkpoint = _no_checkpoint,
    ) -> None:
        self.params: dict[str, Any] = dict(params or {})
        self._checkpoint = checkpoint

    def init_params(self) -> bool:
        """Prepare params before the first execute; False means nothing to do."""
        return True

    def change_params_on_error(self) -> bool:
        """Adapt params after execute died; False gives up. By default, retry as is."""
        return True

    def execute(self, deadline: float) -> bool:
        """Do a chunk of work; True when finished, False when paused by the deadline."""
        raise NotImplementedError(f"{type(self).__qualname__} must implement execute()")

    def checkpoint(self) -> None:
        """Save `self.params` now, so a crash later in this execute keeps this progress."""
        self._checkpoint(self.params)

    @staticmethod
    def time_left(deadline: float) -> float:
        """Seconds until `deadline` (negative once it has passed)."""
        return deadline - time.time()

    @classmethod
    def overrides_init_params(cls) -> bool:
        """Whether `init_params` does anything: when it does not, nothing can die in it,
        so the runner does not write the `starting` status before calling it."""
        return cls.init_params is not Action.init_params
