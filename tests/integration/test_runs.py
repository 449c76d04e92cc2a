"""The record of every run (`bgtaskex_runs`): what `run()` records (idle runs too, a run
an error ended, a storage failure mid-run), what readers make of a run that died,
`Client.runs` and its filters, the retention of run records, and the Prometheus
metrics read from them. On SQLite, PostgreSQL and MariaDB where the backend matters."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import update

from bgtaskex import Action
from bgtaskex import tables as t
from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from bgtaskex.exceptions import LockBusy, StorageError
from bgtaskex.metrics import render
from bgtaskex.models import RunStart, RunSummary, Task
from bgtaskex.owner import holder_name
from bgtaskex.plan import RunPlan
from bgtaskex.run.locks import lock_for
from bgtaskex.run.observer import RunObserver
from bgtaskex.startup import record_idle
from bgtaskex.store import Store
from bgtaskex.store.probe import sqlite_idle
from tests.conftest import TEST_RETRY_DELAY

NOOP = "tests.scripted:Noop"
HERE = __name__
#: The store of the run under test, for `BreaksItsSession` (a hook sees no store).
_RUN_STORE: list[Store] = []


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted", HERE),
        max_execution_time=30.0,
        retry_delay=TEST_RETRY_DELAY,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with connect(settings=settings) as opened:
        yield opened


def _age(client: Client, record: int, seconds: float, *, ended: bool = True) -> None:
    """Move a run record's start (and end) `seconds` into the past."""
    then = datetime.now(UTC) - timedelta(seconds=seconds)
    values = {"started_at": then, "ended_at": then} if ended else {"started_at": then}
    with client.store._engine.begin() as conn:
        conn.execute(update(t.runs).where(t.runs.c.id == record).values(values))


def _record(client: Client, holder: str, *, budget: float = 30.0, process: str = "p") -> int:
    """A run record left "running" by `holder`, as a killed run leaves it."""
    start = RunStart("feed0001", process, holder, "h", 1, "file", datetime.now(UTC), budget)
    return client.store.run_started(start)


def _gone_holder() -> str:
    """The holder name of a process of this host that has exited."""
    code = "from bgtaskex.owner import holder_name; print(holder_name())"
    name = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return f"{name.stdout.strip()}/feed0001"


# -- what run() records ---------------------------------------------------------------


def test_a_run_with_work_and_an_idle_run_are_each_recorded(client: Client) -> None:
    for i in range(2):
        client.enqueue(f"t{i}", [NOOP])
    before = datetime.now(UTC)
    done = client.run_once()
    idle = client.run_once()
    newest, oldest = client.runs()
    assert (newest.run_id, oldest.run_id) == (idle.run_id, done.run_id)  # newest first
    assert (oldest.outcome, oldest.finished, oldest.actions) == ("ok", 2, 2)
    assert (newest.outcome, newest.finished, newest.actions) == ("ok", 0, 0)
    assert (oldest.process, oldest.pid, oldest.lock, oldest.budget) == (
        None,
        os.getpid(),
        "file",
        30.0,
    )
    assert oldest.host and oldest.error is None
    assert before <= oldest.started_at <= oldest.ended_at <= newest.started_at  # type: ignore[operator]
    assert client.store.runs.last_ok_end() == newest.ended_at


def test_a_run_that_finds_the_lock_busy_is_not_recorded(client: Client) -> None:
    lock = lock_for(client.settings.concurrency.lock)
    with lock.hold(client.store, client.settings, 0), pytest.raises(LockBusy):
        client.run_once()
    assert client.runs() == []


class Raises(RunObserver):
    def task_started(self, task: Task) -> None:
        raise RuntimeError("cannot reach postgresql://app:s3cret@db.example/prod")


def test_an_error_that_ends_a_run_is_recorded_failed_with_its_error_masked(
    client: Client,
) -> None:
    client.enqueue("t", [NOOP])
    with pytest.raises(RuntimeError):
        client.run_once(observer=Raises())
    (run,) = client.runs()
    assert run.outcome == "failed" and run.ended_at is not None
    assert run.error is not None and run.error.startswith("RuntimeError: cannot reach")
    assert "s3cret" not in run.error and "db.example" in run.error
    health = client.health()  # check tells it (it did not before: only storage errors)
    (problem,) = [p for p in health.problems() if "last run" in p]
    assert problem.endswith(f"failed: {run.error}") and "s3cret" not in problem


class BreaksItsSession(Action):
    """Ends its own run's database session (PostgreSQL: pg_terminate_backend, MariaDB:
    KILL, SQLite: the connection closed under it), then is done: the run's next write
    fails."""

    def execute(self, deadline: float) -> bool:
        store = _RUN_STORE[0]
        dbapi = store._local.conn.connection.dbapi_connection
        killer = sqlalchemy.create_engine(store.url, isolation_level="AUTOCOMMIT")
        try:
            with killer.connect() as conn:
                if store.dialect == "sqlite":
                    dbapi.close()
                elif store.dialect == "postgresql":
                    pid = dbapi.info.backend_pid
                    conn.execute(sqlalchemy.text(f"SELECT pg_terminate_backend({int(pid)})"))
                else:
                    conn.execute(sqlalchemy.text(f"KILL {int(dbapi.thread_id())}"))
                if _HIDE_RUNS:  # the run's end cannot be written either
                    _rename_runs(conn, "bgtaskex_runs", "bgtaskex_runs_hidden")
        finally:
            killer.dispose()
        return True


#: Set: `BreaksItsSession` also takes the table of run records away.
_HIDE_RUNS: list[bool] = []


def _rename_runs(conn: sqlalchemy.Connection, old: str, new: str) -> None:
    if conn.dialect.name == "mysql" or conn.dialect.name == "mariadb":
        conn.execute(sqlalchemy.text(f"RENAME TABLE {old} TO {new}"))
    else:
        conn.execute(sqlalchemy.text(f"ALTER TABLE {old} RENAME TO {new}"))


def test_a_storage_error_mid_run_is_recorded_as_storage(client: Client) -> None:
    client.enqueue("breaks", [f"{HERE}:BreaksItsSession"])
    _RUN_STORE[:] = [client.store]
    try:
        with pytest.raises(StorageError):
            client.run_once()
    finally:
        _RUN_STORE.clear()
    (run,) = client.runs()
    assert run.outcome == "storage", run
    assert run.ended_at is not None and run.error
    (problem,) = [p for p in client.health().problems() if "last run" in p]
    assert f"run {run.run_id}" in problem and "ended on a storage error" in problem
    client.run_once()  # the next run ends ok: the warning is gone
    assert not [p for p in client.health().problems() if "last run" in p]


class HidesTheEvents(Action):
    """Takes the table of events away, then is done: the write of its finish fails
    (twice: a storage error ends the run), and its task stays running."""

    def execute(self, deadline: float) -> bool:
        killer = sqlalchemy.create_engine(_RUN_STORE[0].url)
        try:
            with killer.begin() as conn:
                _rename_runs(conn, "bgtaskex_events", "bgtaskex_events_hidden")
        finally:
            killer.dispose()
        return True


def test_a_run_record_counts_only_the_ends_that_were_committed(tmp_path: Path) -> None:
    """#15 attack: a finish whose write a storage error lost is not counted finished
    (the task is still running); the execute called (its start committed) is."""
    url = f"sqlite:///{tmp_path / 'hidden.db'}"
    settings = Settings(database_url=url, lock_file=str(tmp_path / "lock"), imports=(HERE,))
    with connect(settings=settings) as client:
        client.enqueue("hidden", [f"{HERE}:HidesTheEvents"])
        _RUN_STORE[:] = [client.store]
        try:
            with pytest.raises(StorageError):
                client.run_once()
        finally:
            _RUN_STORE.clear()
        with client.store._engine.begin() as conn:
            _rename_runs(conn, "bgtaskex_events_hidden", "bgtaskex_events")
        (run,) = client.runs()
        assert client.list_tasks()[0].status == "running"
        assert (run.outcome, run.finished, run.actions) == ("storage", 0, 1), run


def test_a_run_whose_end_cannot_be_written_either_stays_running(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """The end is written best effort: the run's own storage error is what the caller
    gets, one warning says the end was not recorded, and the record stays "running"
    (read as died: its run is over)."""
    client.enqueue("breaks", [f"{HERE}:BreaksItsSession"])
    _RUN_STORE[:], _HIDE_RUNS[:] = [client.store], [True]
    try:
        with pytest.raises(StorageError) as raised:
            client.run_once()
    finally:
        _RUN_STORE.clear()
        _HIDE_RUNS.clear()
    assert "bgtaskex_runs" not in str(raised.value)  # the run's error, not the end's
    assert any("its end could not be recorded" in r.getMessage() for r in caplog.records)
    with client.store._engine.begin() as conn:
        _rename_runs(conn, "bgtaskex_runs_hidden", "bgtaskex_runs")
    (run,) = client.store.runs.recent()
    assert (run.outcome, run.ended_at) == ("running", None)
    assert client.runs()[0].outcome == "died"


# -- runs that died --------------------------------------------------------------------


def test_a_running_record_of_a_gone_process_reads_died(client: Client) -> None:
    dead = _record(client, _gone_holder())
    alive = _record(client, f"{holder_name()}/feed0002")
    from bgtaskex.owner import running

    with running("feed0002"):  # this process has that run going
        shown = {r.id: r.outcome for r in client.runs()}
        assert shown == {dead: "died", alive: "running"}
        assert [r.id for r in client.runs(failed=True)] == [dead]  # not the live one
    assert {r.id: r.outcome for r in client.runs()}[alive] == "died"  # its run is over


def test_a_running_record_past_its_budget_and_grace_reads_died(client: Client) -> None:
    elsewhere = "another-host:1:x.y.z/feed0001"  # cannot be told dead by its process
    record = _record(client, elsewhere, budget=30.0)
    grace = client.settings.died_after
    assert grace is not None
    _age(client, record, 30.0 + grace - 30, ended=False)
    assert client.runs()[0].outcome == "running"
    _age(client, record, 30.0 + grace + 30, ended=False)
    assert client.runs()[0].outcome == "died"
    never = client.settings._replace(kill_after=None)
    with connect(settings=never) as patient:  # kill_after "never": only the process tells
        assert patient.runs()[0].outcome == "running"


# -- Client.runs -------------------------------------------------------------------------


def test_runs_filters_by_process_and_outcome_newest_first(client: Client) -> None:
    store = client.store
    ids = {}
    for name, process, outcome in (
        ("a", "nightly", "ok"),
        ("b", None, "failed"),
        ("c", "nightly", "storage"),
        ("d", None, "ok"),
    ):
        start = RunStart(
            name, process, f"{holder_name()}/{name}", "h", 1, "file", datetime.now(UTC), 30.0
        )
        ids[name] = store.run_started(start)
        store.run_ended(ids[name], outcome, RunSummary(name))
    dead = _record(client, _gone_holder(), process="nightly")
    assert [r.run_id for r in client.runs()] == ["feed0001", "d", "c", "b", "a"]
    assert [r.run_id for r in client.runs(limit=2)] == ["feed0001", "d"]
    assert [r.run_id for r in client.runs(process="nightly")] == ["feed0001", "c", "a"]
    failed = client.runs(failed=True)
    assert [(r.id, r.outcome) for r in failed] == [
        (dead, "died"),
        (ids["c"], "storage"),
        (ids["b"], "failed"),
    ]
    assert [r.run_id for r in client.runs(failed=True, process="nightly", limit=1)] == ["feed0001"]


# -- retention -------------------------------------------------------------------------


def test_a_run_purges_the_run_records_past_their_retention(client: Client) -> None:
    old = client.run_once().run_id
    (record,) = client.runs()
    _age(client, record.id, 40 * 86400)  # past keep_finished (30 days)
    newer = client.run_once().run_id
    assert [r.run_id for r in client.runs()] == [newer]
    assert old != newer


@pytest.mark.parametrize("keep_finished", [0.0, 30 * 86400.0])
def test_the_idle_run_once_deletes_expired_run_records_itself(
    tmp_path: Path, keep_finished: float
) -> None:
    """#15 attack: an expired run record counted as work, so with keep_finished = 0
    (the last run's own row expired at once) every idle run-once was a full run. Now
    the probe stays idle and the idle run's record deletes what expired."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        lock_file=str(tmp_path / "l"),
        keep_finished=keep_finished,
    )
    with connect(settings=settings) as client:
        client.run_once()
        (record,) = client.runs()
        _age(client, record.id, 40 * 86400)
        assert sqlite_idle(settings.url, settings.keep_ended)  # no work: the fast path
        plan = RunPlan.of(settings, None)
        run_id = record_idle(settings, plan, datetime.now(UTC))
        assert [r.run_id for r in client.runs()] == [run_id]  # the expired one went


# -- Prometheus --------------------------------------------------------------------------


def test_prometheus_last_ok_run_end_and_runs_per_outcome(client: Client) -> None:
    text = render(client.stats())
    assert "bgtaskex_last_run_end_timestamp_seconds " not in text  # absent: no run yet
    assert "# TYPE bgtaskex_runs_total gauge" in text
    client.run_once()
    _record(client, _gone_holder())
    record = _record(client, f"{holder_name()}/feed0003")
    client.store.run_ended(record, "failed", RunSummary("feed0003"), "boom")
    stats = client.stats()
    text = render(stats)
    assert stats.last_ok_run_end is not None
    assert "# HELP bgtaskex_last_run_end_timestamp_seconds" in text
    samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if line[:1] != "#")
    ended = float(samples["bgtaskex_last_run_end_timestamp_seconds"])
    assert ended == pytest.approx(stats.last_ok_run_end.timestamp(), abs=1e-3)
    for outcome in ("ok", "died", "failed"):
        assert samples[f'bgtaskex_runs_total{{outcome="{outcome}"}}'] == "1.0"
    assert 'outcome="running"' not in text
