"""`bgtaskex runs` and `bgtaskex check` (text and `--json`) over the record of runs, in
process (`run_cli`), on SQLite, PostgreSQL and MariaDB: each warning of check raised
when due and absent when not; the exit codes (0 OK, 1 a warning, 2 bad input)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from bgtaskex import tables as t
from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from bgtaskex.models import RunStart, RunSummary
from bgtaskex.owner import holder_name
from tests.support.cli import CliResult, run_cli

NOOP = "tests.scripted:Noop"
RUN_FIELDS = {
    "id",
    "run_id",
    "process",
    "host",
    "pid",
    "lock",
    "started_at",
    "ended_at",
    "duration",
    "budget",
    "outcome",
    "finished",
    "paused",
    "failed",
    "errored",
    "cancelled",
    "lost",
    "actions",
    "left_waiting",
    "purged",
    "max_overrun",
    "error",
}

Bg = Callable[..., CliResult]


@pytest.fixture
def config(tmp_path: Path, settings: Settings) -> Path:
    """A config file on the test's database that declares no process."""
    path = tmp_path / "bgtaskex.toml"
    path.write_text(
        f"database_url = {json.dumps(settings.database_url)}\n"
        f"lock_file = {json.dumps(settings.lock_file)}\n"
        'imports = ["tests.scripted"]\n',
        encoding="utf-8",
    )
    return path


@pytest.fixture
def bg(config: Path, isolated: None) -> Bg:
    def run(*args: object) -> CliResult:
        return run_cli("--config", config, *args)

    return run


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with connect(settings=settings) as opened:
        yield opened


def _declare_a_process(config: Path) -> None:
    with config.open("a", encoding="utf-8") as handle:
        handle.write('[[processes]]\nname = "nightly"\nevery = "1m"\n')


def _age_runs(client: Client, seconds: float) -> None:
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    with client.store._engine.begin() as conn:
        conn.execute(update(t.runs).values(started_at=then, ended_at=then))


def _check(bg: Bg, *args: str) -> tuple[int, dict[str, Any]]:
    result = bg("check", "--json", *args)
    assert "Traceback" not in result.err and result.err == "", result.describe()
    return result.code, json.loads(result.out)


def _problems(bg: Bg, *args: str) -> list[str]:
    code, report = _check(bg, *args)
    assert code == (1 if report["problems"] else 0), report
    assert report["status"] == ("warning" if report["problems"] else "ok"), report
    return list(report["problems"])


# -- runs --------------------------------------------------------------------------------


def test_runs_lists_runs_newest_first_with_filters_and_json(bg: Bg, client: Client) -> None:
    assert bg("runs").out == "no run recorded\n"
    assert json.loads(bg("runs", "--json").out) == []
    client.enqueue("t", [NOOP])
    assert bg("run-once", "-q").code == 0
    assert bg("run-once", "-q").code == 0
    start = RunStart(
        "0badc0de", "nightly", f"{holder_name()}/x", "h", 7, "file", datetime.now(UTC), 30.0
    )
    record = client.store.run_started(start)
    client.store.run_ended(record, "storage", RunSummary("0badc0de"), "StorageError: gone")

    runs = json.loads(bg("runs", "--json").out)
    assert [set(r) for r in runs] == [RUN_FIELDS] * 3
    assert [r["outcome"] for r in runs] == ["storage", "ok", "ok"]
    assert runs[2]["finished"] == 1 and runs[1]["finished"] == 0  # the second found nothing
    assert runs[2]["started_at"].endswith("Z") and runs[2]["duration"] >= 0
    assert [r["run_id"] for r in json.loads(bg("runs", "--json", "--limit", "1").out)] == [
        "0badc0de"
    ]
    assert [r["run_id"] for r in json.loads(bg("runs", "--json", "--failed").out)] == ["0badc0de"]
    assert [r["outcome"] for r in json.loads(bg("runs", "--json", "--process", "nightly").out)] == [
        "storage"
    ]

    text = bg("runs").lines()
    assert text[0].split() == [
        "ID",
        "RUN",
        "PROCESS",
        "HOST:PID",
        "STARTED",
        "(UTC)",  # #15 attack: the column was UTC, unlabelled
        "DURATION",
        "OUTCOME",
        "COUNTS",
        "OVERRUN",
        "ERROR",
    ]
    assert (
        "0badc0de" in text[1]
        and "nightly" in text[1]
        and "h:7" in text[1]
        and "StorageError: gone" in text[1]
    )
    assert "1 finished" in text[3]
    assert (
        bg("runs", "--failed", "--process", "other").out == "no run recorded that did not end ok\n"
    )


def test_runs_refuses_a_bad_limit(bg: Bg) -> None:
    result = bg("runs", "--limit", "0")
    assert (
        result.code == 2
        and result.err.startswith("bgtaskex: error: ")
        and len(result.err.splitlines()) == 1
    )


# -- check: no run ended ok lately -----------------------------------------------------


def test_check_warns_when_no_run_ended_ok_within_stale_after(
    bg: Bg, client: Client, config: Path
) -> None:
    code, report = _check(bg)  # a fresh install with no process: no run is expected
    assert code == 0 and report["status"] == "ok" and report["problems"] == []
    assert report["run_expected"] is False and report["last_run"] is None
    assert report["stale_after"] == 300.0

    # Now a run is expected, but a process that never ran is not late (#15 attack:
    # this warned at once on a fresh install).
    _declare_a_process(config)
    code, report = _check(bg)
    assert code == 0 and report["run_expected"] is True, report
    assert "process nightly has not run yet" in report["notes"]

    assert bg("run-once", "--process", "nightly", "-q").code == 0
    code, report = _check(bg)
    assert code == 0 and report["last_run"]["outcome"] == "ok"
    assert report["last_ok_run_ended_at"] == report["last_run"]["ended_at"]

    _age_runs(client, 600)  # its last ok run ended 10 minutes ago: 60s + 30s + 300s
    (problem,) = _problems(bg)
    assert problem.startswith("no run of process nightly has ended ok within 390s"), problem
    assert _problems(bg, "--stale-after", "15m") == []
    assert _problems(bg, "--stale-after", "never") == []
    assert bg("check").code == 1


def test_check_expects_runs_once_one_was_recorded(bg: Bg, client: Client) -> None:
    """No process declared, but cron ran run-once, and stopped."""
    assert bg("run-once", "-q").code == 0
    assert _problems(bg) == []
    _age_runs(client, 600)
    (problem,) = _problems(bg)
    assert "no run has ended ok within" in problem


def test_check_stale_after_is_validated(bg: Bg) -> None:
    for bad in ("0", "-5m", "soon"):
        result = bg("check", "--stale-after", bad)
        assert result.code == 2 and "stale_after" in result.err, result.describe()
        assert len(result.err.splitlines()) == 1
    result = bg("check", "--failed-within", "nope")
    assert result.code == 2 and "--failed-within" in result.err, result.describe()


@pytest.mark.parametrize(
    "args", [("--stuck-after", "x"), ("--stale-after", "0"), ("--failed-within", "0")]
)
def test_check_json_on_bad_input_prints_one_error_line_and_no_object(
    bg: Bg, args: tuple[str, ...]
) -> None:
    """#15 attack, as README says it: exit 2 prints no JSON (a monitor reads the
    exit code first), one error line on stderr."""
    result = bg("check", "--json", *args)
    assert result.code == 2 and result.out == "", result.describe()
    (line,) = result.err.splitlines()
    assert line.startswith("bgtaskex: error: "), result.describe()


# -- check: the last run ended on storage, or died -------------------------------------


def test_check_warns_when_the_last_run_died_or_ended_on_storage(bg: Bg, client: Client) -> None:
    import subprocess
    import sys

    code = "from bgtaskex.owner import holder_name; print(holder_name())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    start = RunStart(
        "deadbeef", None, f"{gone.stdout.strip()}/deadbeef", "h", 9, "file", datetime.now(UTC), 30.0
    )
    client.store.run_started(start)
    problems = _problems(bg)
    assert [p for p in problems if "died" in p] == [
        f"the last run (run deadbeef, h:9, started {start.started_at:%Y-%m-%d %H:%M:%S}Z) "
        "died before its end (killed?)"
    ]
    _, report = _check(bg)
    assert report["last_run"]["outcome"] == "died"

    record = client.store.run_started(replace_run(start, "5704a9e0"))
    client.store.run_ended(record, "storage", RunSummary("5704a9e0"), "DatabaseUnavailable: gone")
    problems = _problems(bg)
    assert [p for p in problems if "last run" in p] == [
        f"the last run (run 5704a9e0, h:9, started {start.started_at:%Y-%m-%d %H:%M:%S}Z) "
        "ended on a storage error: DatabaseUnavailable: gone"
    ]
    assert bg("run-once", "-q").code == 0  # an ok run after them: no warning left
    assert _problems(bg) == []


def replace_run(start: RunStart, run_id: str) -> RunStart:
    from dataclasses import replace

    return replace(start, run_id=run_id, holder=f"{holder_name()}/{run_id}")


# -- check --failed-within ---------------------------------------------------------------


def test_check_failed_within_warns_about_tasks_failed_lately(bg: Bg, client: Client) -> None:
    task_id = _failed_task(client)
    assert _problems(bg) == []  # off by default
    (problem,) = _problems(bg, "--failed-within", "1h")
    assert problem == f"1 task(s) failed within the last 3600s (ids {task_id})"
    _, report = _check(bg, "--failed-within", "1h")
    assert (report["failed_within"], report["failed_recently"]) == (3600.0, 1)
    assert report["failed_recently_ids"] == [task_id]
    with client.store._engine.begin() as conn:  # it failed two hours ago
        then = datetime.now(UTC) - timedelta(hours=2)
        conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(ended_at=then))
    assert _problems(bg, "--failed-within", "1h") == []
    assert len(_problems(bg, "--failed-within", "3h")) == 1


def _failed_task(client: Client) -> int:
    from bgtaskex.models import Change, TaskStatus

    task_id = client.enqueue("bad", [NOOP])
    client.store.apply(Change(task_id, "setup", status=TaskStatus.FAILED))
    return task_id


# -- check: unchanged answers ------------------------------------------------------------


def test_check_json_without_a_schema_creates_nothing(isolated: None, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'none.db'}"
    config = tmp_path / "with-a-process.toml"
    config.write_text('[[processes]]\nname = "nightly"\nevery = "1m"\n', encoding="utf-8")
    result = run_cli("--database-url", url, "check", "--json")
    report = json.loads(result.out)
    assert result.code == 0 and report["status"] == "ok", result.describe()
    assert report["no_schema"] is True and report["run_expected"] is False
    assert run_cli("--database-url", url, "check").out.startswith("BGTASKEX OK - no schema yet")
    # With a process declared a run is expected, and its daemon makes the schema as it
    # starts: none means the file was deleted, or the runs use another database.
    result = run_cli("--config", config, "--database-url", url, "check", "--json")
    report = json.loads(result.out)
    assert result.code == 1 and report["run_expected"] is True, result.describe()
    assert "no bgtaskex schema in this database" in report["problems"][0]
    assert not (tmp_path / "none.db").exists()
