"""`bgtaskex check`: freshness per process (a #15 attack), on SQLite,
PostgreSQL and MariaDB. Run records are written through the store's own start and end
calls, then dated back: an hourly process is not late 20 minutes after its run, one
process whose runs die is not hidden by a healthy one, a process that never ran or
whose window is closed is not late, plain `run-once` runs from cron still are."""

from __future__ import annotations

import json
import subprocess
import sys
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
from tests.support.cli import run_cli

Check = Callable[..., tuple[int, dict[str, Any]]]


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with connect(settings=settings) as opened:
        opened.store.ensure_schema()
        yield opened


@pytest.fixture
def check(tmp_path: Path, settings: Settings, isolated: None) -> Callable[[str], Check]:
    """`check(processes_toml)` -> a function running `check --json` on a config with
    those processes, returning (exit code, report)."""

    def with_config(processes: str) -> Check:
        config = tmp_path / "bgtaskex.toml"
        config.write_text(
            f"database_url = {json.dumps(settings.database_url)}\n"
            f"lock_file = {json.dumps(settings.lock_file)}\n" + processes,
            encoding="utf-8",
        )

        def run(*args: str) -> tuple[int, dict[str, Any]]:
            result = run_cli("--config", config, "check", "--json", *args)
            assert result.err == "", result.describe()
            report = json.loads(result.out)
            assert result.code == (1 if report["problems"] else 0), report
            return result.code, report

        return run

    return with_config


def _record(
    client: Client,
    process: str | None,
    outcome: str,
    ended_ago: float,
    *,
    error: str | None = None,
    holder: str | None = None,
) -> None:
    """A run of `process` that ended `ended_ago` seconds ago with `outcome` ("running":
    started then and never ended; its holder a live process unless `holder`)."""
    then = datetime.now(UTC) - timedelta(seconds=ended_ago)
    run_id = f"r{then.timestamp():.6f}"[-16:]
    start = RunStart(
        run_id, process, holder or f"{holder_name()}/{run_id}", "h", 9, "file", then, 30.0
    )
    record = client.store.run_started(start)
    if outcome != "running":
        client.store.run_ended(record, outcome, RunSummary(run_id), error)
        with client.store._engine.begin() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id == record).values(ended_at=then))


def _gone_holder() -> str:
    code = "from bgtaskex.owner import holder_name; print(holder_name())"
    gone = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return f"{gone.stdout.strip()}/dead"


HOURLY = '[[processes]]\nname = "hourly"\nevery = "1h"\n'
HOURLY_CRON = '[[processes]]\nname = "hourly"\ncron = "0 * * * *"\n'


@pytest.mark.parametrize("processes", [HOURLY, HOURLY_CRON], ids=["every", "cron"])
def test_an_hourly_process_is_not_late_20_minutes_after_its_run(
    client: Client, check: Callable[[str], Check], processes: str
) -> None:
    run = check(processes)
    _record(client, "hourly", "ok", 20 * 60)
    code, report = run()
    assert (code, report["problems"]) == (0, []), report
    assert (report["late"], report["stale"]) == ([], False)

    _record(client, "hourly", "ok", 3 * 3600)  # an older one changes nothing
    assert run()[0] == 0
    with client.store._engine.begin() as conn:  # the last ok run ended 2 hours ago
        then = datetime.now(UTC) - timedelta(hours=2)
        conn.execute(update(t.runs).values(started_at=then, ended_at=then))
    code, report = run()
    (problem,) = report["problems"]
    assert problem.startswith("no run of process hourly has ended ok within 3930s"), problem
    (late,) = report["late"]
    assert (late["process"], late["expected_within"], report["stale"]) == ("hourly", 3930, True)
    assert late["last_ok_run_ended_at"].endswith("Z")


TWO = (
    '[[processes]]\nname = "good"\nqueues = ["a"]\nevery = "1m"\n'
    '[[processes]]\nname = "bad"\nqueues = ["b"]\nevery = "1m"\n'
)


@pytest.mark.parametrize(
    ("outcome", "sentence"),
    [
        ("died", "died before its end (killed?)"),
        ("storage", "ended on a storage error: StorageError: gone"),
        ("refused", "was refused at start: StorageError: gone"),
        ("failed", "failed: StorageError: gone"),
    ],
)
def test_a_process_whose_last_run_did_not_end_ok_is_not_hidden_by_a_healthy_one(
    client: Client, check: Callable[[str], Check], outcome: str, sentence: str
) -> None:
    run = check(TWO)
    if outcome == "died":
        _record(client, "bad", "running", 5, holder=_gone_holder())
    else:
        _record(client, "bad", outcome, 5, error="StorageError: gone")
    _record(client, "good", "ok", 1)  # the latest run of all: ok
    _, report = run()
    (problem,) = report["problems"]
    assert "process bad" in problem and problem.endswith(sentence), problem
    (failing,) = report["failing"]
    assert (failing["process"], failing["outcome"]) == ("bad", outcome)
    assert report["last_run"]["process"] == "good"

    _record(client, "bad", "ok", 0)  # its next run ends ok: nothing left
    assert run()[1]["problems"] == []


def test_a_late_process_is_not_hidden_by_a_healthy_one(
    client: Client, check: Callable[[str], Check]
) -> None:
    run = check(TWO)
    _record(client, "bad", "ok", 600)  # 60s + 30s + 300s: late after 390s
    _record(client, "good", "ok", 1)
    _, report = run()
    (problem,) = report["problems"]
    assert problem.startswith("no run of process bad has ended ok within 390s"), problem
    assert [late["process"] for late in report["late"]] == ["bad"], report


def test_a_process_that_never_ran_is_not_late(
    client: Client, check: Callable[[str], Check]
) -> None:
    """#15 attack: a fresh install with a declared process does not warn."""
    code, report = check(TWO)()
    assert (code, report["problems"], report["run_expected"]) == (0, [], True), report
    assert "process good has not run yet" in report["notes"]
    assert "process bad has not run yet" in report["notes"]


def test_a_windowed_process_outside_its_window_is_not_late(
    client: Client, check: Callable[[str], Check]
) -> None:
    """#15 attack: a nightly-only process is not late all week."""
    day = (datetime.now().astimezone() + timedelta(days=3)).isoweekday()  # closed today
    window = f'window = {{ days = [{day}], start = "01:00", end = "02:00" }}\n'
    run = check('[[processes]]\nname = "nightly"\nevery = "2s"\n' + window)
    _record(client, "nightly", "ok", 2 * 86400)
    code, report = run()
    assert (code, report["problems"]) == (0, []), report
    assert report["late"] == []

    _record(client, "nightly", "running", 2 * 86400, holder=_gone_holder())
    (problem,) = run()[1]["problems"]  # a run that died is told all the same
    assert "process nightly" in problem and "died before its end" in problem


def test_plain_run_once_runs_from_cron_are_late_after_stale_after(
    client: Client, check: Callable[[str], Check]
) -> None:
    run = check("")
    _record(client, None, "ok", 60)
    assert run()[1]["problems"] == []
    with client.store._engine.begin() as conn:
        then = datetime.now(UTC) - timedelta(minutes=10)
        conn.execute(update(t.runs).values(started_at=then, ended_at=then))
    _, report = run()
    (problem,) = report["problems"]
    assert problem.startswith("no run has ended ok within 300s"), problem
    (late,) = report["late"]
    assert (late["process"], late["expected_within"]) == (None, 300)
    assert run("--stale-after", "15m")[1]["problems"] == []


def test_a_windowed_process_is_late_counted_from_its_window_opening(
    client: Client, check: Callable[[str], Check]
) -> None:
    """Open now: its last ok run a day ago makes it late only once the window has
    been open longer than its limit (60s + 30s + 300s)."""

    def config(opened_ago: timedelta) -> Check:
        now = datetime.now().astimezone()
        start, end = now - opened_ago, now + timedelta(hours=2)  # may cross midnight
        window = f'window = {{ start = "{start:%H:%M}", end = "{end:%H:%M}" }}\n'
        return check('[[processes]]\nname = "nightly"\nevery = "1m"\n' + window)

    _record(client, "nightly", "ok", 86400)
    assert config(timedelta(minutes=3))()[1]["problems"] == []  # opened 3-4 minutes ago
    (problem,) = config(timedelta(hours=2))()[1]["problems"]
    assert problem.startswith("no run of process nightly has ended ok within 390s"), problem


def test_a_database_without_the_schema_warns_when_processes_are_declared(
    check: Callable[[str], Check],
) -> None:
    """#15 attack: the SQLite file deleted (or the runs pointed at another database):
    `check` said `OK - no schema yet` for ever, though the config declares processes,
    whose daemon makes the schema as it starts. Without processes, a database that
    nothing used yet is still fine."""
    code, report = check(HOURLY)()
    assert code == 1 and report["no_schema"], report
    assert any("no bgtaskex schema in this database" in p for p in report["problems"]), report
    code, report = check("")()
    assert (code, report["problems"]) == (0, []), report
    assert any("no schema yet" in note for note in report["notes"]), report
