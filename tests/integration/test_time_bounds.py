"""Times that hold at their edges (attack round on #14, findings 01-05): a duration or a
date past what a datetime holds is bad input (one line, exit 2), never an internal
error; a retry delay or a snooze that big cannot lose a death or fail an action that did
not die; `--at` a local time in a DST gap follows the one DST rule of `walltime`.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from bgtaskex import Action
from bgtaskex.client import Client
from bgtaskex.config import MAX_DURATION
from bgtaskex.exceptions import UsageError
from tests.support.cli import Bgx, describe, isolate, run_cli

HERE = __name__
NOOP = "tests.scripted:Noop"


class HugeBackoff(Action):
    """Its own retry delay (not checked at load) is far past year 9999."""

    retry_delay = 1e12
    max_retry_delay = 1e15

    def execute(self, deadline: float) -> bool:
        raise RuntimeError("boom")


class SnoozesLong(Action):
    def execute(self, deadline: float) -> bool:
        return self.snooze(float(self.params["seconds"]))


class RaisesOnce(Action):
    """Keeps the default change_params_on_error: the next run retries it as is."""

    def execute(self, deadline: float) -> bool:
        if not self.params.get("raised"):
            self.params["raised"] = True
            self.checkpoint()
            raise RuntimeError("once")
        return True


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'bgtaskex.db'}"


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str) -> list[str]:
    """The global options of an in-process `bgtaskex` on an SQLite file."""
    isolate(monkeypatch, tmp_path)
    return ["--database-url", url, "--import", "tests.scripted", "--import", HERE]


def _enqueue_and_run(bgx: Bgx, url: str, ref: str, params: dict[str, Any]) -> dict[str, Any]:
    """Enqueue one action, one real `run-once` subprocess; the task as `show --json`."""
    opts = ("--database-url", url, "--import", HERE)
    task_id = bgx.ok(*opts, "enqueue", "t", f"{ref}={json.dumps(params)}", "-q").stdout.strip()
    run = bgx(*opts, "run-once")  # a hook's error is logged with its traceback
    assert run.returncode == 0 and "OverflowError" not in run.stderr, describe(run)
    return bgx.show(url, int(task_id))


# -- 01: a retry delay past year 9999 --------------------------------------------------------


def test_a_huge_retry_delay_records_the_death_and_waits_100_years(bgx: Bgx, url: str) -> None:
    task = _enqueue_and_run(bgx, url, f"{HERE}:HugeBackoff", {})
    action = task["actions"][0]
    assert (task["status"], action["last_failure"]) == ("running", "RuntimeError: boom"), task
    assert any(e["message"] == "execute raised RuntimeError: boom" for e in task["events"])
    ahead = datetime.fromisoformat(task["not_before"]) - datetime.now(UTC)
    assert MAX_DURATION - 120 < ahead.total_seconds() <= MAX_DURATION


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"BGTASKEX_RETRY_DELAY": "500000w"}, "retry_delay"),
        ({"BGTASKEX_MAX_RETRY_DELAY": "36501d"}, "max_retry_delay"),
        ({"BGTASKEX_KILL_AFTER": "99999999999d"}, "kill_after"),
        ({"BGTASKEX_KEEP_FINISHED": "1000000d"}, "keep_finished"),  # the idle probe's cutoff
    ],
)
def test_a_duration_over_100_years_stops_at_load(
    cli: list[str], monkeypatch: pytest.MonkeyPatch, env: dict[str, str], key: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    result = run_cli(*cli, "run-once", "--json")
    assert result.code == 2, result.describe()
    assert result.err.startswith(f"bgtaskex: error: {key} (from BGTASKEX_"), result.describe()
    assert "at most 36500d (100 years)" in result.err and len(result.err.splitlines()) == 1


# -- 02: TOML nan / inf ------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["kill_after = nan", "max_execution_time = inf"])
def test_a_toml_nan_or_inf_duration_is_a_bad_value(
    cli: list[str], tmp_path: Path, line: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(line + "\n", encoding="utf-8")
    run_cli(*cli, "enqueue", "t", NOOP)
    result = run_cli("--config", config, *cli, "run-once", "--json")
    assert result.code == 2, result.describe()
    key = line.split(" = ")[0]
    assert result.err.startswith(f"bgtaskex: error: {key} (from config file"), result.describe()
    assert run_cli(*cli, "list", "--json").json()[0]["status"] == "created"


# -- 03: large durations and dates are bad input, not internal errors ------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("enqueue", "t", NOOP, "--in", "3000000d"),
        ("enqueue", "t", NOOP, "--in", "99999999999d"),
        ("enqueue", "t", NOOP, "--at", "9999-12-31T23:59-05:00"),
        ("enqueue", "t", NOOP, "--at", "9999-06-01T00:00Z"),  # too close to datetime.max
        ("list", "--since", "3000000d"),
        ("list", "--since", "0001-01-01T00:00+05:00"),
        ("purge", "--older-than", "3000000d", "--yes"),
    ],
)
def test_a_time_out_of_range_is_bad_input(cli: list[str], args: tuple[str, ...]) -> None:
    result = run_cli(*cli, *args)
    assert result.code == 2, result.describe()
    assert len(result.err.splitlines()) == 1, result.describe()
    assert "internal error" not in result.err and "Traceback" not in result.err
    if args[0] == "enqueue":
        assert run_cli(*cli, "list", "--json").json() == []


def test_100_years_ahead_is_still_accepted(cli: list[str]) -> None:
    task = run_cli(*cli, "enqueue", "t", NOOP, "--in", "36500d", "--json").json()
    ahead = datetime.fromisoformat(task["not_before"]) - datetime.now(UTC)
    assert MAX_DURATION - 60 < ahead.total_seconds() <= MAX_DURATION


@pytest.mark.parametrize(
    "not_before",
    [
        timedelta(days=3_000_000),
        timedelta(days=-3_000_000),
        timedelta(days=36501),
        datetime(9999, 12, 31, 23, 59, tzinfo=timezone(timedelta(hours=-5))),
        datetime(9999, 1, 1, tzinfo=UTC),
    ],
)
def test_python_enqueue_refuses_a_not_before_out_of_range(
    client: Client, not_before: datetime | timedelta
) -> None:
    with pytest.raises(UsageError, match="not_before out of range"):
        client.enqueue("t", [NOOP], not_before=not_before)
    assert client.list_tasks() == []


@pytest.fixture
def db_url(url: str) -> str:
    return url


# -- 04: --at a local time the clock skips or repeats ---------------------------------------


@pytest.mark.parametrize(
    ("zone", "at", "expected"),
    [
        ("Europe/Paris", "2027-03-28T02:30", "2027-03-28T01:00:00Z"),  # skipped: 03:00 CEST
        ("America/New_York", "2027-03-14T02:30", "2027-03-14T07:00:00Z"),  # 03:00 EDT
        ("Europe/Paris", "2027-10-31T02:30", "2027-10-31T00:30:00Z"),  # repeated: the first
        ("Europe/Paris", "2027-06-01T12:00", "2027-06-01T10:00:00Z"),
        ("Europe/Paris", "2027-06-01", "2027-05-31T22:00:00Z"),
    ],
)
def test_enqueue_at_a_local_time_follows_the_dst_rule(
    bgx: Bgx, url: str, zone: str, at: str, expected: str
) -> None:
    opts = ("--database-url", url, "--import", "tests.scripted")
    result = bgx(*opts, "enqueue", "t", NOOP, "--at", at, "--json", env={"TZ": zone})
    assert result.returncode == 0, describe(result)
    assert json.loads(result.stdout)["not_before"] == expected


# -- 05: a snooze past year 9999 ---------------------------------------------------------------


@pytest.mark.parametrize("seconds", ["1e12", "inf", "nan"])
def test_a_snooze_too_long_is_an_ordinary_hook_error(bgx: Bgx, url: str, seconds: str) -> None:
    task = _enqueue_and_run(bgx, url, f"{HERE}:SnoozesLong", {"seconds": seconds})
    action = task["actions"][0]
    assert task["status"] == "running", task
    assert action["last_failure"].startswith(
        "ValueError: snooze takes seconds from 0 to 100 years"
    ), action


def test_a_retry_as_is_is_a_running_row_not_a_note(bgx: Bgx, url: str) -> None:
    """The history row of a death whose action keeps the default change_params_on_error:
    the task stays `running` (it was shown as a note, None -> None)."""
    task = _enqueue_and_run(bgx, url, f"{HERE}:RaisesOnce", {})
    again = bgx("--database-url", url, "--import", HERE, "run-once")
    assert again.returncode == 0, describe(again)
    task = bgx.show(url, task["id"])
    assert task["status"] == "finished", task
    rows = [e for e in task["events"] if "retrying it as is" in e["message"]]
    assert len(rows) == 1, task["events"]
    assert (rows[0]["old_status"], rows[0]["new_status"]) == ("running", "running")
