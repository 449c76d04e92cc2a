"""The rough edges of #15 section 4: what `list` says of a task, the log line of a
cancelled task, `purge`'s refusals, `show` off a terminal, progress counts as ints.

Backend-independent behaviour runs on SQLite (`lite`); what a backend can change runs
on each of them (`client`)."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from tests.support.cli import Bgx, wait_until

CANCELS_ITSELF = "tests.ops_actions:CancelsItself"
LOOPER = "tests.ops_actions:Looper"
WAIT_FILE = "tests.ops_actions:WaitFile"
SNOOZER = "tests.ops_actions:Snoozer"
SCRIPTED = "tests.scripted:Scripted"
NOOP = "tests.scripted:Noop"
IMPORTS = ("--import", "tests.scripted", "--import", "tests.ops_actions")


def cli(lite: Client) -> tuple[str, ...]:
    """The CLI arguments of `lite`'s database and imports."""
    return ("--database-url", str(lite.settings.database_url), *IMPORTS)


# -- what list says of a task ----------------------------------------------------------------


@pytest.fixture
def slow_retries(tmp_path: Path) -> Iterator[Client]:
    """SQLite; execute may die twice (max_attempts 3); a retry waits an hour."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'states.db'}",
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted", "tests.ops_actions"),
        max_attempts=3,
        retry_delay=3600,
        max_retry_delay=3600,
    )
    with connect(settings=settings) as client:
        yield client


def listed(bgx: Bgx, client: Client, *imports: str) -> dict[int, dict[str, Any]]:
    """`list --json` by id, through the real command (declaring `imports`, by default
    the client's)."""
    declared = imports or client.settings.imports
    args = [arg for module in declared for arg in ("--import", module)]
    url = ("--database-url", str(client.settings.database_url))
    env = {"BGTASKEX_MAX_ATTEMPTS": str(client.settings.max_attempts)}
    return {task["id"]: task for task in bgx.json(*url, *args, "list", "--json", env=env)}


def test_list_shows_the_failed_action_with_its_attempts_and_why(
    slow_retries: Client, bgx: Bgx, tmp_path: Path
) -> None:
    """A failed task showed its last action (`2/2 Noop ... ATTEMPTS 0`), not the one
    that failed after its attempts."""
    client = slow_retries
    log = str(tmp_path / "calls.jsonl")
    dies = (SCRIPTED, {"name": "A", "log": log, "plan": {"execute": ["raise"]}})
    tid = client.enqueue("doomed", [dies, NOOP])
    for _ in range(3):  # three deaths, the retry delay skipped by hand
        client.run_once()
        _due_now(client, tid)
    client.run_once()
    task = listed(bgx, client)[tid]
    assert task["status"] == "failed", task
    state = task["state"]
    assert (state["kind"], state["rank"], state["attempts"], state["max_attempts"]) == (
        "failed",
        1,
        3,
        3,
    ), state
    assert state["text"] == "failed: RuntimeError: A.execute scripted failure #3", state
    url = ("--database-url", str(client.settings.database_url))
    table = bgx.ok(*url, "list", env={"BGTASKEX_MAX_ATTEMPTS": "3"}).stdout
    row = next(line for line in table.splitlines() if line.split()[0] == str(tid))
    assert re.search(r" 1/2 Scripted +- +3 +failed: RuntimeError: A\.execute", row), table


def _due_now(client: Client, task_id: int) -> None:
    """Make a task waiting for its retry delay due at once (the test's clock)."""
    from sqlalchemy import update

    from bgtaskex import tables as t

    with client.store._engine.begin() as conn:
        conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(not_before=None))


def test_list_says_execute_died_and_when_it_is_retried(
    slow_retries: Client, bgx: Bgx, tmp_path: Path
) -> None:
    """Status `running` while nothing runs: the state says the execute died, which
    death of how many, and when a run tries it again."""
    client = slow_retries
    log = str(tmp_path / "calls.jsonl")
    tid = client.enqueue(
        "flaky", [(SCRIPTED, {"name": "A", "log": log, "plan": {"execute": ["raise"]}})]
    )
    client.run_once()  # the first death: recorded, retried in an hour
    task = listed(bgx, client)[tid]
    due = client.get(tid).not_before
    assert task["status"] == "running" and due is not None, task
    clock = due.strftime("%H:%M:%S UTC") if due.date() == due.now(due.tzinfo).date() else None
    state = task["state"]
    assert state["kind"] == "died" and state["attempts"] == 1, state
    assert state["text"].startswith("execute died (1/3), retry at "), state
    if clock is not None:
        assert state["text"] == f"execute died (1/3), retry at {clock}", state
    assert state["at"] == task["not_before"], state

    _due_now(client, tid)  # the second death: counted by this run, then the delay
    client.run_once()
    state = listed(bgx, client)[tid]["state"]
    assert (state["kind"], state["attempts"]) == ("died", 2), state
    assert state["text"].startswith("execute died (2/3), retry at"), state


def test_list_says_a_task_is_executing_while_a_run_holds_it(lite: Client, tmp_path: Path) -> None:
    release = tmp_path / "go"
    tid = lite.enqueue("busy", [(WAIT_FILE, {"file": str(release)})])
    run = threading.Thread(target=lite.run_once)
    run.start()
    try:
        wait_until(lambda: lite.get(tid).status == "running", "execute to start")
        state = lite.task_states([lite.get(tid)])[tid]
        assert (state.kind, state.text) == ("executing", "in execute now"), state
    finally:
        release.touch()
        run.join(timeout=30)
    assert lite.get(tid).status == "finished"


def test_list_says_which_module_a_task_waits_for(lite: Client, bgx: Bgx) -> None:
    tid = lite.enqueue("orphan", [(LOOPER, {"total": 1})])
    state = listed(bgx, lite, "tests.scripted")[tid]["state"]  # tests.ops_actions undeclared
    assert state["kind"] == "waiting_for_module" and state["module"] == "tests.ops_actions"
    assert state["text"] == "waiting for module tests.ops_actions (not declared)", state
    assert listed(bgx, lite)[tid]["state"]["kind"] == "due"  # declared: nothing in the way


def test_list_says_snoozed_delayed_and_due(lite: Client, bgx: Bgx) -> None:
    snoozed = lite.enqueue("sleepy", [(SNOOZER, {"seconds": 3600})])
    lite.run_once()
    delayed = lite.enqueue("later", [NOOP], not_before=timedelta(days=3))
    due = lite.enqueue("now", [NOOP])
    tasks = listed(bgx, lite)
    said = {tid: (tasks[tid]["state"]["kind"], tasks[tid]["state"]["text"]) for tid in tasks}
    assert said[snoozed][0] == "snoozed" and said[snoozed][1].startswith("snoozed until "), said
    assert said[delayed][0] == "delayed", said
    assert re.fullmatch(r"due at \d{4}-\d\d-\d\d \d\d:\d\d UTC", said[delayed][1]), said
    assert said[due] == ("due", "due"), said


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


# -- the JSON fields are documented ---------------------------------------------------------


def _json_section() -> str:
    readme = (Path(__file__).parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("### JSON output", 1)[1]
    return section.split("\n## ", 1)[0]


def _keys(value: Any) -> set[str]:
    """Every key of every object in `value`, at any depth, except inside params."""
    if isinstance(value, list):
        return set().union(*(_keys(v) for v in value)) if value else set()
    if not isinstance(value, dict):
        return set()
    found = set(value)
    for key, inner in value.items():
        if key != "params":
            found |= _keys(inner)
    return found


def test_every_field_of_show_and_list_json_is_documented(lite: Client, bgx: Bgx) -> None:
    """README, *JSON output*: `show --json` had claim fields (claimed_by, claim_token,
    lease_until) and `last_failure` that it did not name."""
    tid = lite.enqueue("documented", [(LOOPER, {"total": 3, "per_call": 1, "step": 0.0})])
    lite.run_once()
    shown = bgx.json(*cli(lite), "show", tid, "--json")
    listed = bgx.json(*cli(lite), "list", "--json")
    words = set(re.findall(r"[a-z_]+", _json_section()))
    undocumented = sorted((_keys(shown) | _keys(listed)) - words)
    assert undocumented == [], undocumented
