"""The `[[processes]]` of the config: parsing and its errors (one line naming the process
and the key), the default process, `Process.next_occurrence`, and `bgtaskex processes`
(in-process CLI; it reads the config only, no database)."""

from __future__ import annotations

import json
import time as clock
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from bgtaskex.config import Settings, load_settings
from bgtaskex.exceptions import ConfigError
from bgtaskex.processes import DEFAULT_PROCESS, Process
from bgtaskex.schedule import WeeklyWindow
from tests.support.cli import run_cli


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(body, encoding="utf-8")
    return path


def load(tmp_path: Path, body: str) -> Settings:
    return load_settings(write(tmp_path, body), environ={})


def config_error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, body)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("processes (from config file "), message
    return message


# -- parsing ---------------------------------------------------------------------------


def test_full_processes_are_parsed(tmp_path: Path) -> None:
    settings = load(
        tmp_path,
        """
        max_execution_time = "45s"

        [[processes]]
        name = "reports"
        queues = ["reports", "exports"]
        max_execution_time = "2m"
        every = "30s"
        window = {days = "mon-fri", start = "01:00", end = "05:30"}
        callable = "tests.planner:plan"

        [[processes]]
        name = "nightly.cleanup-1"
        cron = "*/5 * * * *"
        window = {days = ["sat", 7], start = "22:00", end = "02:00", enabled = false}
        """,
    )
    reports, nightly = settings.processes
    assert reports == Process(
        name="reports",
        queues=("reports", "exports"),
        max_execution_time=120.0,
        every=30.0,
        window=WeeklyWindow("mon-fri", "01:00", "05:30"),
        callable="tests.planner:plan",
    )
    assert nightly.name == "nightly.cleanup-1"
    assert nightly.cron == "*/5 * * * *" and nightly.every is None
    assert nightly.queues is None and nightly.max_execution_time is None
    assert nightly.window == WeeklyWindow([6, 7], "22:00", "02:00", enabled=False)
    # A process that names no queues leaves those another process names to it.
    assert settings.scheduled == (reports, replace(nightly, exclude_queues=("exports", "reports")))
    assert settings.process("reports") is reports
    assert settings.max_execution_time == 45  # the global budget is untouched


def test_window_defaults_to_every_day_all_day(tmp_path: Path) -> None:
    (process,) = load(tmp_path, '[[processes]]\nname = "p"\nevery = 10\nwindow = {}\n').processes
    assert process.window == WeeklyWindow("mon-sun", "00:00", "23:59")
    assert process.every == 10


@pytest.mark.parametrize("body", ["", "processes = []\n", 'log_level = "INFO"\n'])
def test_default_process_when_none_is_configured(tmp_path: Path, body: str) -> None:
    settings = load(tmp_path, body)
    assert settings.processes == ()
    assert settings.scheduled == (DEFAULT_PROCESS,)
    default = settings.process("default")
    assert default.every == 60 and default.cron is None
    assert default.queues is None and default.window is None and default.callable is None
    assert default.max_execution_time is None  # the global max_execution_time applies


def test_unknown_process_name_lists_the_configured_ones(tmp_path: Path) -> None:
    settings = load(tmp_path, '[[processes]]\nname = "a"\nevery = 1\n')
    with pytest.raises(ConfigError, match=r"no process named 'b' \(configured: a\)"):
        settings.process("b")
    with pytest.raises(ConfigError, match=r"configured: default"):
        Settings().process("b")


P = '[[processes]]\nname = "p"\n'


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        # every / cron: exactly one
        (P + 'every = "1s"\ncron = "* * * * *"\n', ["'every'", "'cron'"]),
        (P + "queues = ['a']\n", ["'every'", "'cron'"]),
        # every and budgets
        (P + 'every = "soon"\n', ["every"]),
        (P + "every = 0\n", ["every"]),
        (P + 'every = "-5s"\n', ["every"]),
        (P + "every = true\n", ["every"]),
        (P + 'every = "1s"\nmax_execution_time = "0s"\n', ["max_execution_time"]),
        (P + 'every = "1s"\nmax_execution_time = "a while"\n', ["max_execution_time"]),
        # cron: 5 fields
        (P + 'cron = "* * * *"\n', ["cron", "5 fields"]),
        (P + 'cron = "0 * * * * *"\n', ["cron", "5 fields"]),
        (P + 'cron = ""\n', ["cron"]),
        (P + "cron = 5\n", ["cron"]),
        # window
        (P + 'every = 1\nwindow = {days = "funday"}\n', ["window", "funday"]),
        (P + "every = 1\nwindow = {days = []}\n", ["window", "days"]),
        (P + "every = 1\nwindow = {days = [8]}\n", ["window", "8"]),
        (P + 'every = 1\nwindow = {days = "fri-mon"}\n', ["window", "fri-mon"]),
        (P + 'every = 1\nwindow = {start = "25:00"}\n', ["window", "25:00", "start"]),
        (P + 'every = 1\nwindow = {end = "1pm"}\n', ["window", "1pm", "end"]),
        (P + 'every = 1\nwindow = {start = "7:5"}\n', ["window", "7:5"]),
        (P + 'every = 1\nwindow = {enabled = "no"}\n', ["window", "enabled"]),
        (P + 'every = 1\nwindow = {days = "mon", hours = "1-5"}\n', ["'window'"]),
        (P + 'every = 1\nwindow = "mon-fri 01:00-05:00"\n', ["'window'"]),
        # queues, callable, name, unknown keys
        (P + "every = 1\nqueues = []\n", ["'queues'"]),
        (P + 'every = 1\nqueues = "reports"\n', ["'queues'"]),
        (P + "every = 1\nqueues = [1]\n", ["'queues'"]),
        (P + 'every = 1\ncallable = "tests.planner.plan"\n', ["'callable'"]),
        (P + 'every = 1\ncallable = "tests.planner:"\n', ["'callable'"]),
        (P + "every = 1\ncallable = 3\n", ["'callable'"]),
        (P + 'every = 1\nevry = "1s"\n', ["unknown key 'evry'"]),
        (P + 'every = 1\nqueue = "a"\n', ["unknown key 'queue'"]),
    ],
)
def test_bad_process_is_one_line_naming_the_process_and_the_key(
    tmp_path: Path, body: str, needles: list[str]
) -> None:
    message = config_error(tmp_path, body)
    assert "process 'p'" in message, message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ('[[processes]]\nname = "two words"\nevery = 1\n', "'name'"),
        ('[[processes]]\nname = ""\nevery = 1\n', "'name'"),
        ('[[processes]]\nname = "-dash-first"\nevery = 1\n', "'name'"),
        ('[[processes]]\nname = "x"\nevery = 1\n[[processes]]\nname = "x"\ncron = "0 3 * * *"\n',
         "two processes are named 'x'"),
        ('processes = "default"\n', "[[processes]] tables"),
        ("processes = [1, 2]\n", "[[processes]] tables"),
    ],
)  # fmt: skip
def test_bad_process_names_and_shapes(tmp_path: Path, body: str, needle: str) -> None:
    assert needle in config_error(tmp_path, body)


def test_process_without_a_name_is_named_by_its_position(tmp_path: Path) -> None:
    message = config_error(tmp_path, P + "every = 1\n[[processes]]\nevery = 1\n")
    assert "process 2" in message and "'name'" in message


def test_processes_from_the_environment_are_refused_with_the_variable_name(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="BGTASKEX_PROCESSES"):
        load_settings(environ={"BGTASKEX_PROCESSES": "default", "XDG_CONFIG_HOME": str(tmp_path)})


@pytest.mark.parametrize("cron", ["61 * * * *", "* * * * xyz", "0 25 * * *"])
def test_bad_cron_values_are_refused_at_load(tmp_path: Path, cron: str) -> None:
    message = config_error(tmp_path, P + f'cron = "{cron}"\n')
    assert "process 'p'" in message and "cron" in message


def test_log_format_setting(tmp_path: Path) -> None:
    assert load(tmp_path, 'log_format = "json"\n').log_format == "JSON"
    assert load_settings(environ={"BGTASKEX_LOG_FORMAT": "Json"}).log_format == "JSON"
    assert Settings().log_format == "TEXT"
    with pytest.raises(ConfigError, match="log_format"):
        load(tmp_path, 'log_format = "xml"\n')


def test_stop_timeout_setting(tmp_path: Path) -> None:
    assert Settings().stop_timeout == 20
    assert load(tmp_path, 'stop_timeout = "1s"\n').stop_timeout == 1
    with pytest.raises(ConfigError, match="stop_timeout"):
        load(tmp_path, "stop_timeout = 0\n")


# -- next occurrence ---------------------------------------------------------------------

SATURDAY_NOON = datetime(2030, 1, 5, 12, 0, tzinfo=UTC)  # a Saturday in the future


def test_next_occurrence_of_an_interval_moves_into_the_window() -> None:
    sunday = Process("p", every=60, window=WeeklyWindow(["sun"], "01:00", "23:30"))
    nxt = sunday.next_occurrence(SATURDAY_NOON)
    assert nxt is not None
    # The interval's phase follows the trigger's start: the first tick at or after 01:00.
    assert datetime(2030, 1, 6, 1, 0, tzinfo=UTC) <= nxt < datetime(2030, 1, 6, 1, 1, tzinfo=UTC)
    inside = SATURDAY_NOON + timedelta(days=1)  # Sunday noon: the next tick, within 60 s
    nxt = sunday.next_occurrence(inside)
    assert nxt is not None and inside <= nxt <= inside + timedelta(seconds=60)


def test_next_occurrence_of_a_cron_inside_and_outside_its_window() -> None:
    monday = WeeklyWindow(["mon"], "01:00", "05:00")
    assert Process("p", cron="0 3 * * *", window=monday).next_occurrence(SATURDAY_NOON) == datetime(
        2030, 1, 7, 3, 0, tzinfo=UTC
    )
    # A tick before the window opens is skipped: 00:30 never falls inside 01:00-05:00,
    # but */30 does at 01:00.
    assert Process("p", cron="*/30 * * * *", window=monday).next_occurrence(
        SATURDAY_NOON
    ) == datetime(2030, 1, 7, 1, 0, tzinfo=UTC)
    assert Process("p", cron="0 3 * * *").next_occurrence(SATURDAY_NOON) == datetime(
        2030, 1, 6, 3, 0, tzinfo=UTC
    )


def test_next_occurrence_of_a_disabled_window_is_none() -> None:
    off = WeeklyWindow("mon-sun", "00:00", "23:59", enabled=False)
    assert Process("p", every=60, window=off).next_occurrence(SATURDAY_NOON) is None
    assert Process("p", cron="* * * * *", window=off).next_occurrence(SATURDAY_NOON) is None


@pytest.mark.timeout(2)
def test_next_occurrence_of_a_trigger_that_never_meets_its_window_is_quick() -> None:
    never = Process("p", cron="30 6 * * *", window=WeeklyWindow(["mon"], "01:00", "05:00"))
    began = clock.monotonic()
    assert never.next_occurrence(SATURDAY_NOON) is None
    assert clock.monotonic() - began < 1


# -- `bgtaskex processes` ----------------------------------------------------------------


def processes_command(tmp_path: Path, body: str, *args: str) -> tuple[int, str, str]:
    result = run_cli("--config", write(tmp_path, body), "processes", *args)
    return result.code, result.out, result.err


PROCESS_FIELDS = {
    "name",
    "queues",
    "exclude_queues",
    "max_execution_time",
    "every",
    "cron",
    "window",
    "callable",
    "next_at",
}


def test_processes_json_lists_the_processes_with_their_next_occurrence(
    tmp_path: Path, isolated: None
) -> None:
    before = datetime.now().astimezone().replace(microsecond=0)
    code, out, err = processes_command(
        tmp_path,
        """
        [[processes]]
        name = "sunday"
        queues = ["reports"]
        max_execution_time = "2m"
        every = "60s"
        window = {days = "sun", start = "01:00", end = "23:30"}
        callable = "tests.planner:plan"

        [[processes]]
        name = "nightly"
        cron = "0 3 * * *"
        window = {days = ["mon"], start = "01:00", end = "05:00"}

        [[processes]]
        name = "off"
        every = "5m"
        window = {days = "mon-fri", start = "08:00", end = "18:00", enabled = false}

        [[processes]]
        name = "plain"
        every = "10s"
        """,
        "--json",
    )
    assert code == 0 and err == "", err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["sunday", "nightly", "off", "plain"]
    assert all(set(r) == PROCESS_FIELDS for r in rows), rows
    sunday, nightly, off, plain = rows

    assert sunday["queues"] == ["reports"] and sunday["max_execution_time"] == 120
    assert sunday["every"] == 60 and sunday["cron"] is None
    assert sunday["window"] == {"days": [7], "start": "01:00", "end": "23:30", "enabled": True}
    assert sunday["callable"] == "tests.planner:plan"
    at = datetime.fromisoformat(sunday["next_at"])
    assert at.tzinfo is not None and at >= before
    assert at.isoweekday() == 7 and time(1, 0) <= at.time() <= time(23, 30), at
    assert at <= before + timedelta(days=7, seconds=61)

    assert nightly["every"] is None and nightly["cron"] == "0 3 * * *"
    at = datetime.fromisoformat(nightly["next_at"])
    assert (at.isoweekday(), at.time()) == (1, time(3, 0)), at
    assert before < at <= before + timedelta(days=7)

    assert off["window"]["enabled"] is False and off["next_at"] is None

    assert plain["queues"] is None and plain["window"] is None and plain["callable"] is None
    at = datetime.fromisoformat(plain["next_at"])
    assert before <= at <= before + timedelta(seconds=11)


def test_processes_json_without_processes_shows_the_default(tmp_path: Path, isolated: None) -> None:
    code, out, _ = processes_command(tmp_path, 'log_level = "WARNING"\n', "--json")
    assert code == 0
    (row,) = json.loads(out)
    expected: dict[str, Any] = {
        "name": "default",
        "queues": None,
        "max_execution_time": None,
        "every": 60.0,
        "cron": None,
        "window": None,
        "callable": None,
    }
    assert {k: row[k] for k in expected} == expected
    assert row["next_at"] is not None


def test_processes_table_for_people(tmp_path: Path, isolated: None) -> None:
    code, out, err = processes_command(
        tmp_path,
        '[[processes]]\nname = "reports"\nqueues = ["a", "b"]\ncron = "0 3 * * *"\n'
        '[[processes]]\nname = "off"\nevery = 60\nwindow = {enabled = false}\n',
    )
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["NAME", "QUEUES"]
    reports = next(line for line in lines if line.startswith("reports"))
    assert "0 3 * * *" in reports
    off = next(line for line in lines if line.startswith("off"))
    assert "disabled" in off and "never" in off


def test_processes_with_a_bad_config_is_one_line_exit_2(tmp_path: Path, isolated: None) -> None:
    code, out, err = processes_command(tmp_path, P + 'every = "1s"\ncron = "* * * * *"\n')
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("bgtaskex: error: ")
    assert "process 'p'" in err


# -- attack #14 finding 15: cron steps crontab accepts, durations as configured ---------------


@pytest.mark.parametrize(
    ("cron", "fires"),
    [
        ("0 0 */31 * *", datetime(2027, 1, 1, tzinfo=UTC)),  # day 1 only, as crontab
        ("0 0 1 */12 *", datetime(2027, 1, 1, tzinfo=UTC)),  # January only
        ("0 0 31/1 * *", datetime(2026, 12, 31, tzinfo=UTC)),  # "31-31/1": the 31st
        ("*/60 13 * * *", datetime(2026, 12, 6, 13, 0, tzinfo=UTC)),  # minute 0
        ("5-10/7 13 * * *", datetime(2026, 12, 6, 13, 5, tzinfo=UTC)),  # minute 5
        ("0 0 * jan/13 *", datetime(2027, 1, 1, tzinfo=UTC)),
    ],
)
def test_a_step_past_its_range_is_one_value_as_crontab_reads_it(cron: str, fires: datetime) -> None:
    """They were refused ("bad day step in '31/1' ...: expected 1 to 0"); crontab takes
    them, with the one value the range starts at."""
    sunday_noon = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    assert Process("p", cron=cron).next_occurrence(sunday_noon, UTC) == fires


@pytest.mark.parametrize(
    ("cron", "needle"),
    [
        ("0 0 31/1 2 *", "never fires: no such date (day 31/1 of month 2)"),
        ("*/0 * * * *", "bad minute step in '*/0' of '*/0 * * * *': expected >= 1"),
        ("0 0 * * 1-5/0", "bad day of week step"),
    ],
)
def test_a_bad_step_says_why(tmp_path: Path, cron: str, needle: str) -> None:
    message = config_error(tmp_path, P + f'cron = "{cron}"\n')
    assert needle in message and "expected 1 to" not in message, message


@pytest.mark.parametrize(
    ("every", "shown"),
    [("400d", "every 400d"), ("90m", "every 90m"), ("2h", "every 2h"), ("45", "every 45s"),
     ("1.5s", "every 1500ms"), ("7d", "every 7d")],
)  # fmt: skip
def test_an_interval_is_shown_in_its_largest_unit(
    tmp_path: Path, isolated: None, every: str, shown: str
) -> None:
    """`every = "400d"` was shown as "every 3.456e+07s" by `processes`."""
    code, out, err = processes_command(tmp_path, P + f'every = "{every}"\n')
    assert code == 0 and err == "", err
    row = next(line for line in out.splitlines() if line.startswith("p "))
    assert f" {shown} " in row + " ", row
