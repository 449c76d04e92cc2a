"""Scheduled processes run in-process against real databases (SQLite and PostgreSQL):
`Client.run_once(process=..., now=...)` with its window (the `now` parameter is the
clock), queues and planner callable, and `bgtaskex run-once --process NAME` through the
in-process CLI (`run_cli` of tests/support/cli.py)."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.client import Client
from bgtaskex.config import Settings
from bgtaskex.exceptions import ConfigError, OutsideWindow
from bgtaskex.processes import Process
from bgtaskex.run.file_lock import lock_is_held
from bgtaskex.schedule import WeeklyWindow
from tests import planner
from tests.scripted import calls
from tests.support.cli import CliResult, run_cli

SCRIPTED = "tests.scripted:Scripted"
NOOP = "tests.scripted:Noop"
SATURDAY_NOON = datetime(2022, 10, 8, 12, 0, tzinfo=UTC)  # 2022-10-08 is a Saturday
WEEKDAY_NIGHTS = WeeklyWindow("mon-fri", "01:00", "05:00")


def scripted(log: str, plan: dict[str, list[str]], name: str = "A") -> tuple[str, dict[str, Any]]:
    return (SCRIPTED, {"name": name, "log": log, "plan": plan})


def skewed_now(ahead: float) -> datetime:
    """The real time, on a clock whose whole-second UTC offset puts the next minute
    boundary `ahead` to `ahead + 1` seconds away: a window ending at that minute (windows
    end on whole minutes) then closes about `ahead` seconds from now, in real time."""
    real = time.time()
    offset = math.ceil(59 - ahead - real % 60) % 60
    return datetime.fromtimestamp(real, timezone(timedelta(seconds=offset)))


@pytest.fixture(autouse=True)
def fresh_planner() -> Iterator[None]:
    planner.CALLS.clear()
    yield
    planner.CALLS.clear()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def runner_log() -> Iterator[Records]:
    """Records of the `bgtaskex.runner` logger, whatever an in-process CLI call earlier in
    the session did to the `bgtaskex` logger's handlers and propagation."""
    handler = Records()
    logger = logging.getLogger("bgtaskex.runner")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# -- the window ------------------------------------------------------------------------


def test_outside_the_window_raises_and_touches_nothing(client: Client, calls_log: str) -> None:
    task_id = client.enqueue("t", [scripted(calls_log, {})])
    before = client.events(task_id)
    process = Process("nights", every=60, window=WEEKDAY_NIGHTS, callable="tests.planner:plan")

    with pytest.raises(OutsideWindow) as caught:
        client.run_once(process=process, now=SATURDAY_NOON)

    message = str(caught.value)
    assert "process nights" in message and "outside its window" in message, message
    assert "opens Mon 2022-10-10 01:00" in message, message
    task = client.get(task_id)
    assert task.status == "created" and task.last_run_id is None
    assert client.events(task_id) == before
    assert calls(calls_log) == []
    assert planner.CALLS == []  # the planner is not called outside the window
    assert not lock_is_held(client.settings.lock_path)
    assert client.count_tasks() == 1


@pytest.mark.parametrize(
    "now",
    [
        SATURDAY_NOON,
        datetime(2022, 10, 10, 0, 59, 59, tzinfo=UTC),  # Monday, just before 01:00
        datetime(2022, 10, 10, 5, 0, 1, tzinfo=UTC),  # Monday, just after 05:00
        datetime(2022, 10, 10, 8, 0, tzinfo=timezone(timedelta(hours=5))),  # 03:00 UTC
    ],
)
def test_outside_the_window_on_the_process_clock(client: Client, now: datetime) -> None:
    """The window is read on `now`'s own wall clock; the real time does not matter."""
    client.enqueue("t", [NOOP])
    with pytest.raises(OutsideWindow):
        client.run_once(process=Process("nights", every=60, window=WEEKDAY_NIGHTS), now=now)
    assert client.list_tasks()[0].status == "created"


def test_disabled_window_never_runs(client: Client) -> None:
    task_id = client.enqueue("t", [NOOP])
    off = WeeklyWindow("mon-sun", "00:00", "23:59", enabled=False)
    with pytest.raises(OutsideWindow, match="disabled"):
        client.run_once(process=Process("off", every=60, window=off))
    assert client.get(task_id).status == "created"


def test_inside_the_window_the_run_ends_at_the_window_end(client: Client, calls_log: str) -> None:
    now = skewed_now(ahead=1.0)
    wall = now.replace(tzinfo=None)
    window = WeeklyWindow(
        "mon-sun", f"{wall:%H:%M}", f"{wall + timedelta(minutes=1):%H:%M}"
    )  # crosses midnight at 23:59, still ending at the next minute
    ends = window.window_end(now)
    assert ends is not None and 1.0 <= ends.timestamp() - now.timestamp() <= 2.0
    task_id = client.enqueue("edge", [scripted(calls_log, {"execute": ["until-deadline"]})])
    process = Process("edge", every=60, max_execution_time=30, window=window)

    began = time.time()
    summary = client.run_once(process=process, now=now)
    ended = time.time()

    assert summary.paused == 1 and summary.finished == 0, summary
    assert summary.budget == 30
    # execute worked until the window's end, not for the 30 s budget
    assert -0.1 <= ended - ends.timestamp() < 1.0, (ended, ends)
    assert ended - began < 5
    assert calls(calls_log) == [("A", "init"), ("A", "execute")]
    assert client.get(task_id).status == "paused"


def test_inside_a_long_window_the_budget_still_ends_the_run(client: Client, calls_log: str) -> None:
    always = WeeklyWindow("mon-sun", "00:00", "00:00")  # 24 h windows that touch
    client.enqueue("t", [scripted(calls_log, {"execute": ["until-deadline"]})])
    process = Process("short", every=60, max_execution_time=0.5, window=always)
    began = time.monotonic()
    summary = client.run_once(process=process, now=datetime.now(UTC))
    assert summary.paused == 1 and summary.budget == 0.5
    assert time.monotonic() - began < 3


# -- queues ----------------------------------------------------------------------------


def test_a_process_runs_only_the_tasks_of_its_queues(client: Client) -> None:
    on_a = client.enqueue("on a", [NOOP], queue="a")
    on_b = client.enqueue("on b", [NOOP], queue="b")
    on_default = client.enqueue("on default", [NOOP])
    late_a = client.enqueue("late on a", [NOOP], queue="a", type="interactive")

    summary = client.run_once(process=Process("a-only", every=60, queues=("a",)))
    assert summary.finished == 2
    assert {t: client.get(t).status for t in (on_a, late_a, on_b, on_default)} == {
        on_a: "finished",
        late_a: "finished",
        on_b: "created",
        on_default: "created",
    }

    again = client.run_once(process=Process("a-only", every=60, queues=("a",)))
    assert again.finished == 0 and client.get(on_b).status == "created"

    rest = client.run_once(process=Process("rest", every=60, queues=("b", "default")))
    assert rest.finished == 2
    assert client.get(on_b).status == client.get(on_default).status == "finished"


def test_a_process_without_queues_runs_every_queue(client: Client) -> None:
    ids = [client.enqueue(f"t{q}", [NOOP], queue=q) for q in ("a", "b", "default")]
    assert client.run_once(process=Process("all", every=60)).finished == 3
    assert {client.get(i).status for i in ids} == {"finished"}


def test_the_process_budget_overrides_the_global_one(client: Client, calls_log: str) -> None:
    client.enqueue("t", [scripted(calls_log, {"execute": ["until-deadline"]})])
    began = time.monotonic()
    summary = client.run_once(process=Process("quick", every=60, max_execution_time=0.3))
    assert summary.budget == 0.3 and summary.paused == 1
    assert time.monotonic() - began < 3  # not the client's 30 s


# -- the planner callable ----------------------------------------------------------------


def test_planner_runs_with_the_client_under_the_lock_and_its_tasks_run_in_the_same_run(
    client: Client,
) -> None:
    elsewhere = client.enqueue("elsewhere", [NOOP], queue="other")
    process = Process(
        "planning", every=60, queues=(planner.PLANNED_QUEUE,), callable="tests.planner:plan"
    )

    summary = client.run_once(process=process)

    assert len(planner.CALLS) == 1
    (call,) = planner.CALLS
    assert call["client"] is client
    assert call["lock_held"] is True, "the planner must run while the run holds the lock"
    planned = client.get(call["task_id"])
    assert planned.queue == planner.PLANNED_QUEUE
    assert planned.status == "finished" and planned.last_run_id == summary.run_id
    assert summary.finished == 1
    assert client.get(elsewhere).status == "created"
    assert not lock_is_held(client.settings.lock_path)


def test_planner_is_called_at_every_run_of_its_process(client: Client) -> None:
    process = Process("planning", every=60, callable="tests.planner:plan")
    client.run_once(process=process)
    client.run_once(process=process)
    assert len(planner.CALLS) == 2
    assert all(c["lock_held"] for c in planner.CALLS)
    assert {client.get(c["task_id"]).status for c in planner.CALLS} == {"finished"}
    client.run_once()  # a plain run calls no planner
    assert len(planner.CALLS) == 2


def test_planner_that_raises_is_logged_and_the_run_goes_on(
    client: Client, runner_log: Records
) -> None:
    task_id = client.enqueue("t", [NOOP])
    summary = client.run_once(process=Process("boom", every=60, callable="tests.planner:explode"))
    assert summary.finished == 1 and client.get(task_id).status == "finished"
    errors = [r for r in runner_log.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in runner_log.records]
    assert "callable raised" in errors[0].getMessage()
    assert summary.run_id in errors[0].getMessage()
    assert errors[0].exc_info is not None and errors[0].exc_info[0] is RuntimeError


@pytest.mark.parametrize(
    ("target", "needle"),
    [("tests.no_such_module:plan", "cannot import"), ("tests.planner:nothing", "no function")],
)
def test_planner_that_cannot_be_loaded_is_a_config_error_before_the_run(
    client: Client, target: str, needle: str
) -> None:
    task_id = client.enqueue("t", [NOOP])
    with pytest.raises(ConfigError) as caught:
        client.run_once(process=Process("broken", every=60, callable=target))
    assert needle in str(caught.value) and "process broken" in str(caught.value)
    assert client.get(task_id).status == "created"


# -- `run-once --process NAME` -----------------------------------------------------------


Result = CliResult


def toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string, for the plain ASCII used here


def weekday_in(days: int) -> int:
    """The ISO weekday `days` days from today (local time)."""
    return (date.today() + timedelta(days=days)).isoweekday()


PROCESSES = f"""
[[processes]]
name = "a"
queues = ["a"]
every = "1s"

[[processes]]
name = "later"
every = "1s"
window = {{days = [{weekday_in(3)}], start = "00:00", end = "23:59"}}

[[processes]]
name = "planning"
queues = ["planned"]
every = "1s"
callable = "tests.planner:plan"
"""


@pytest.fixture
def bg(settings: Settings, tmp_path: Path, isolated: None) -> Callable[..., Result]:
    """`bg("run-once", "--process", "a")`: the CLI with a config file of PROCESSES on the
    test's database and lock file, no BGTASKEX_* variable or user config leaking in."""
    assert settings.database_url is not None and settings.lock_file is not None
    config = tmp_path / "bgtaskex.toml"
    config.write_text(
        f"database_url = {toml(settings.database_url)}\n"
        f"lock_file = {toml(settings.lock_file)}\n"
        'imports = ["tests.scripted"]\n' + PROCESSES,
        encoding="utf-8",
    )

    def run(*args: str) -> Result:
        return run_cli("--config", config, *args)

    return run


def test_run_once_unknown_process_is_one_line_exit_2(
    client: Client, bg: Callable[..., Result]
) -> None:
    task_id = client.enqueue("t", [NOOP], queue="a")
    result = bg("run-once", "--process", "nope")
    assert result.code == 2 and result.out == "", result
    assert result.err.count("\n") == 1, result
    assert result.err.startswith("bgtaskex: error: no process named 'nope'"), result
    assert "a, later, planning" in result.err
    assert client.get(task_id).status == "created"


def test_run_once_process_outside_its_window_says_so_and_exits_0(
    client: Client, bg: Callable[..., Result]
) -> None:
    task_id = client.enqueue("t", [NOOP])  # due: the window, not idleness, stops the run
    result = bg("run-once", "--process", "later")
    assert result.code == 0 and result.err == "", result
    (line,) = result.lines()
    assert "process later" in line and "outside its window" in line and "nothing done" in line

    as_json = bg("run-once", "--process", "later", "--json")
    assert as_json.code == 0 and as_json.err == "", as_json
    report = json.loads(as_json.out)
    assert report["run_id"] is None and report["outside_window"] is True
    assert "outside its window" in report["message"]
    assert client.get(task_id).status == "created"


def test_run_once_process_runs_its_queues_only(client: Client, bg: Callable[..., Result]) -> None:
    on_a = client.enqueue("on a", [NOOP], queue="a")
    on_b = client.enqueue("on b", [NOOP], queue="b")
    result = bg("run-once", "--process", "a", "--json")
    assert result.code == 0, result
    report = json.loads(result.out)
    assert report["finished"] == 1 and report["budget"] == 30
    assert client.get(on_a).status == "finished"
    assert client.get(on_b).status == "created"

    idle = bg("run-once", "--process", "a")
    assert idle.code == 0 and len(idle.lines()) == 1, idle
    assert client.get(on_b).status == "created"


def test_run_once_process_with_a_planner_runs_on_an_empty_database(
    client: Client, bg: Callable[..., Result]
) -> None:
    """Nothing is queued, yet the planner must be called (no "nothing due" shortcut), and
    what it plans runs in the same run."""
    result = bg("run-once", "--process", "planning", "--json")
    assert result.code == 0, result
    report = json.loads(result.out)
    assert report["finished"] == 1, report
    (task,) = client.list_tasks()
    assert task.queue == planner.PLANNED_QUEUE and task.status == "finished"
    assert task.last_run_id == report["run_id"]
    assert [c["lock_held"] for c in planner.CALLS] == [True]
