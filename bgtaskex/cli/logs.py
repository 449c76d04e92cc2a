"""Where the CLI's log lines go: stderr, as text or one JSON object each, secrets masked."""

from __future__ import annotations

import logging
import sys
from typing import Any

from ..urls import mask_secrets


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


class _MaskingJsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers (python-json-logger), secrets masked
    field by field before encoding, so that the line stays valid JSON."""

    def __init__(self) -> None:
        from pythonjsonlogger.json import JsonFormatter

        class Masked(JsonFormatter):
            def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
                return {
                    k: mask_secrets(v) if isinstance(v, str) else v for k, v in log_data.items()
                }

        super().__init__()
        self.json = Masked(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
        )

    def format(self, record: logging.LogRecord) -> str:
        return self.json.format(record)


def setup_logging(level: str, fmt: str = "TEXT") -> None:
    """bgtaskex's loggers (and APScheduler's errors) to stderr at `level`, as text or JSON."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "JSON":
        handler.setFormatter(_MaskingJsonFormatter())
    else:
        # journald and cron add their own time stamp; a terminal user still wants one.
        handler.setFormatter(_MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("bgtaskex")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    # APScheduler says "skipped: maximum number of running instances reached" for every
    # tick coalesced behind a long run: expected here, so only its errors are shown.
    scheduler = logging.getLogger("apscheduler")
    scheduler.handlers[:] = [handler]
    scheduler.setLevel(max(logging.ERROR, logging.getLevelName(level)))
    scheduler.propagate = False
    # psycopg warns "error ignored terminating <Pipeline>: the connection is lost" after
    # the server ended the session, beside the run's own one line that says so.
    logging.getLogger("psycopg").setLevel(max(logging.ERROR, logging.getLevelName(level)))
    # Any other library's warning (SQLAlchemy's pool, Alembic) goes to logging's handler of
    # last resort when nothing else takes it: masked too.
    last = logging.StreamHandler(sys.stderr)
    last.setLevel(logging.WARNING)
    last.setFormatter(_MaskingFormatter("%(message)s"))
    logging.lastResort = last
