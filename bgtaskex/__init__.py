"""bgtaskex: long, resumable background work in time-boxed slices.

Write actions by subclassing `Action`; queue tasks with `connect().enqueue(...)`; run
them with `bgtaskex run-once` from cron, a systemd timer or the daemon.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .action import Action
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
from .models import ActionRecord, ActionStatus, Event, RunSummary, Task, TaskStatus, TaskType

if TYPE_CHECKING:
    from .client import Client

__version__ = "0.1.0.dev0"

__all__ = [
    "Action",
    "ActionRecord",
    "ActionStatus",
    "BgtaskexError",
    "Client",
    "ConfigError",
    "DatabaseUnavailable",
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


def connect(url: str | None = None, **kwargs: Any) -> Client:
    """Open a client on `url` (default: the configured database, else the embedded SQLite
    file in the user's data directory). See `bgtaskex.client.connect`."""
    from .client import connect as _connect

    return _connect(url, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "Client":
        from .client import Client

        return Client
    raise AttributeError(f"module 'bgtaskex' has no attribute {name!r}")
