"""Purge hooks for tests/integration/test_retention.py, named in a rule's `hooks`.

`record` and `record_too` append one JSON line `{"hook", "table", "keys"}` per call to the
file named by the environment variable RETENTION_HOOK_LOG (nothing when it is unset);
`explode` raises, to show that a failing hook neither stops the others nor the deletion;
`crash_once` kills the run (SimulatedCrash) at its first call, then does nothing.
"""

from __future__ import annotations

import os
from typing import Any

from tests.support import journal

LOG_VARIABLE = "RETENTION_HOOK_LOG"


def _append(hook: str, table: str, keys: list[int]) -> None:
    path = os.environ.get(LOG_VARIABLE)
    if not path:
        return
    journal.append(path, {"hook": hook, "table": table, "keys": keys})


def record(table: str, keys: list[int]) -> None:
    _append("record", table, keys)


def record_too(table: str, keys: list[int]) -> None:
    _append("record_too", table, keys)


def explode(table: str, keys: list[int]) -> None:
    raise RuntimeError(f"hook exploded on {len(keys)} keys of {table}")


def calls(path: str) -> list[dict[str, Any]]:
    """The calls logged in `path`, oldest first (none when the file does not exist)."""
    return journal.read(path)


class SimulatedCrash(BaseException):
    """Stands for kill -9: not an Exception, so nothing catches it and nothing more is
    written, as if the process had died inside the hook."""


def crash_once(table: str, keys: list[int]) -> None:
    """Kill the run at the first call (a marker file next to the log remembers it)."""
    path = os.environ.get(LOG_VARIABLE)
    if not path or os.path.exists(path + ".crashed"):
        return
    with open(path + ".crashed", "w"):
        pass
    raise SimulatedCrash(f"crash after a chunk of {len(keys)} keys of {table}")
