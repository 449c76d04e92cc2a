"""A purge hook for tests/acceptance/test_rules_cli.py: `tests.rules_cli_hooks:record`
appends one JSON line `{"pid", "table", "keys"}` per call to the file named by the
environment variable RULES_CLI_HOOK_LOG.

Each line is written with a single `write(2)` on a file opened with O_APPEND, so a process
killed with SIGKILL leaves whole lines only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

LOG_ENV = "RULES_CLI_HOOK_LOG"


def record(table: str, keys: list[int]) -> None:
    line = json.dumps({"pid": os.getpid(), "table": table, "keys": list(keys)}) + "\n"
    fd = os.open(os.environ[LOG_ENV], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def calls(path: str | Path) -> list[dict[str, Any]]:
    """Every call recorded in `path`, oldest first."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in text.splitlines() if line.strip()]
