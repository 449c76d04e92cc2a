"""The rough edges of #15 section 4: what `list` says of a task, the log line of a
cancelled task, `purge`'s refusals, `show` off a terminal, progress counts as ints.

Backend-independent behaviour runs on SQLite (`lite`); what a backend can change runs
on each of them (`client`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bgtaskex.client import Client

CANCELS_ITSELF = "tests.ops_actions:CancelsItself"


# -- a cancelled task is logged as cancelled ----------------------------------------------


def test_a_task_cancelled_under_its_run_is_logged_as_cancelled(
    lite: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The cancel comes while execute runs; execute then returns True with no checkpoint
    in between: the run learns of it when it writes the task's end."""
    settings = lite.settings
    params = {
        "url": settings.database_url,
        "lock_file": settings.lock_file,
        "task_name": "selfish",
    }
    tid = lite.enqueue("selfish", [(CANCELS_ITSELF, params)])
    with caplog.at_level(logging.INFO, logger="bgtaskex"):
        summary = lite.run_once()
    assert (summary.cancelled, summary.finished) == (1, 0), summary
    assert lite.get(tid).status == "cancelled"
    lines = [r.getMessage() for r in caplog.records if f"task {tid} (selfish)" in r.getMessage()]
    assert lines == [f"run {summary.run_id}: task {tid} (selfish) cancelled"], caplog.text
