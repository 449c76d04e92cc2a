"""One run: the lock, the plan's tasks through the state machine, then the expiry of
ended tasks.

Loaded lazily (PEP 562), so that `run.locks`, `run.file_lock`, `run.signals` and
`run.preflight` serve the idle `run-once` without SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import run

__all__ = ["run"]


def __getattr__(name: str) -> Any:
    if name == "run":
        from .runner import run

        return run
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
