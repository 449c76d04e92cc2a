"""bgtaskex: long, resumable background work in time-boxed slices.

Write actions by subclassing `Action`; queue tasks with `connect().enqueue(...)`; run
them with `bgtaskex run-once` from cron, a systemd timer or the daemon.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .action import Action
    from .client import Client
    from .exceptions import (
        BgtaskexError,
        ConfigError,
        DatabaseUnavailable,
        InvalidRef,
        InvalidState,
        LockBusy,
        StorageError,
        TaskNotFound,
        UsageError,
    )
    from .models import (
        ActionRecord,
        ActionStatus,
        Enqueued,
        Event,
        RunSummary,
        Task,
        TaskStatus,
        TaskType,
    )

__version__ = "0.1.0.dev0"

# Loaded on first use (PEP 562): the idle `run-once` of cron starts without the models.
_EXPORTS = {
    "Action": ".action",
    "Client": ".client",
    **dict.fromkeys(
        (
            "BgtaskexError",
            "ConfigError",
            "DatabaseUnavailable",
            "InvalidRef",
            "InvalidState",
            "LockBusy",
            "StorageError",
            "TaskNotFound",
            "UsageError",
        ),
        ".exceptions",
    ),
    **dict.fromkeys(
        (
            "ActionRecord",
            "ActionStatus",
            "Enqueued",
            "Event",
            "RunSummary",
            "Task",
            "TaskStatus",
            "TaskType",
        ),
        ".models",
    ),
}

__all__ = [
    "Action",
    "ActionRecord",
    "ActionStatus",
    "BgtaskexError",
    "Client",
    "ConfigError",
    "DatabaseUnavailable",
    "Enqueued",
    "Event",
    "InvalidRef",
    "InvalidState",
    "LockBusy",
    "RunSummary",
    "StorageError",
    "Task",
    "TaskNotFound",
    "TaskStatus",
    "TaskType",
    "UsageError",
    "connect",
]
assert set(__all__) == {*_EXPORTS, "connect"}


def connect(url: str | None = None, **kwargs: Any) -> Client:
    """Open a client on `url` (default: the configured database, else the embedded SQLite
    file in the user's data directory). See `bgtaskex.client.connect`."""
    from .client import connect as _connect

    return _connect(url, **kwargs)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bgtaskex' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
