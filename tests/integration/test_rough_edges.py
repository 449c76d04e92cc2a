"""The rough edges of #15 section 4: what `list` says of a task, the log line of a
cancelled task, `purge`'s refusals, `show` off a terminal, progress counts as ints.

Backend-independent behaviour runs on SQLite (`lite`); what a backend can change runs
on each of them (`client`)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bgtaskex.client import Client
from tests.support.cli import Bgx

CANCELS_ITSELF = "tests.ops_actions:CancelsItself"
LOOPER = "tests.ops_actions:Looper"
IMPORTS = ("--import", "tests.scripted", "--import", "tests.ops_actions")


def cli(lite: Client) -> tuple[str, ...]:
    """The CLI arguments of `lite`'s database and imports."""
    return ("--database-url", str(lite.settings.database_url), *IMPORTS)


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


# -- show and list through a pipe ----------------------------------------------------------


def test_progress_counts_given_as_ints_stay_ints_in_json(lite: Client, bgx: Bgx) -> None:
    """Stored as REAL: 2750 came back as 2750.0 in `show --json` and `list --json`."""
    tid = lite.enqueue("counted", [(LOOPER, {"total": 3, "per_call": 1, "step": 0.0})])
    lite.run_once()
    shown = bgx.json(*cli(lite), "show", tid, "--json")
    listed = bgx.json(*cli(lite), "list", "--json")
    for task in (shown, listed[0]):
        progress = task["actions"][0]["progress"]
        assert (progress["done"], progress["total"]) == (1, 3), progress
        assert type(progress["done"]) is int and type(progress["total"]) is int, progress


def test_show_and_list_through_a_pipe_have_no_trailing_spaces(lite: Client, bgx: Bgx) -> None:
    tid = lite.enqueue("piped", [(LOOPER, {"total": 3, "per_call": 1, "step": 0.0})])
    lite.enqueue("other one with a longer name", [(LOOPER, {"total": 1, "step": 0.0})])
    lite.run_once()
    for args in (("show", tid), ("list",)):
        out = bgx.ok(*cli(lite), *args).stdout  # stdout is a pipe
        assert out.strip() and "\x1b" not in out, out
        padded = [line for line in out.splitlines() if line != line.rstrip()]
        assert padded == [], (args, padded)
