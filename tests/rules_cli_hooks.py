"""A purge hook for tests/acceptance/test_rules_cli.py: `tests.rules_cli_hooks:record`
appends one JSON line `{"pid", "table", "keys"}` per call to the file named by the
environment variable RULES_CLI_HOOK_LOG.

Each line is written with a single `write(2)` on a file opened with O_APPEND, so a process
killed with SIGKILL leaves whole lines only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tests.support import journal

LOG_ENV = "RULES_CLI_HOOK_LOG"


def record(table: str, keys: list[int]) -> None:
    journal.append(os.environ[LOG_ENV], {"pid": os.getpid(), "table": table, "keys": list(keys)})


def calls(path: str | Path) -> list[dict[str, Any]]:
    """Every call recorded in `path`, oldest first."""
    return journal.read(path)
