"""Claims under leases (`lock = "none"`), the cluster lock (`lock = "database"`) and the
migration that brought their columns, on real databases (PostgreSQL and MariaDB).

The store hands each due task to one worker at a time, with a fencing token that grows
with every claim; a lease that runs out lets another worker take the task over, after
which the first one's writes are refused. Multi-process scenarios (daemons killed,
stopped, cut off) are in tests/acceptance/test_scaleout.py.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from bgtaskex.client import Client, connect
from bgtaskex.concurrency import Concurrency
from bgtaskex.config import Settings
from bgtaskex.exceptions import ClaimLost, ConfigError, LockBusy, StorageError
from bgtaskex.models import Change, NewAction, Task, TaskStatus, TaskType
from bgtaskex.store import Store
from bgtaskex.store.probe import HEAD_REVISION
from tests.acceptance.conftest import command
from tests.conftest import isolated_env

NOOP = "tests.scripted:Noop"
SCRIPTED = "tests.scripted:Scripted"

SERVERS = [
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
]


@pytest.fixture(params=SERVERS)
def server_url(request: pytest.FixtureRequest) -> str:
    """A fresh database on a server: a PostgreSQL schema or a MariaDB database."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_schema_url"))
    return str(request.getfixturevalue("mariadb_database_url"))


@pytest.fixture
def server_store(server_url: str) -> Iterator[Store]:
    store = Store(server_url)
    store.ensure_schema()
    yield store
    store.close()


def enqueue(store: Store, name: str, type: TaskType = TaskType.CRON) -> int:
    return store.enqueue(name, type, "default", [NewAction(NOOP)])


def bump_token(store: Store, task_id: int) -> None:
    """What another worker's claim does to the row, done behind the store's back."""
    with store._engine.begin() as conn:
        conn.execute(
            text("UPDATE bgtaskex_tasks SET claim_token = claim_token + 1 WHERE id = :id"),
            {"id": task_id},
        )


# -- the store ----------------------------------------------------------------------------


def test_claims_follow_the_run_order_and_a_run_takes_a_task_once(server_store: Store) -> None:
    cron = enqueue(server_store, "cron")
    interactive = enqueue(server_store, "interactive", TaskType.INTERACTIVE)
    first = server_store.claim("w1", "run-a", 60)
    assert first is not None and first.id == interactive
    assert (first.claimed_by, first.claim_token) == ("w1", 1)
    assert first.lease_until is not None
    second = server_store.claim("w1", "run-a", 60)
    assert second is not None and second.id == cron
    assert server_store.claim("w2", "run-b", 60) is None, "both are held by their leases"
    server_store.release(interactive, 1)
    assert server_store.claim("w1", "run-a", 60) is None, "run-a already took it"
    again = server_store.claim("w2", "run-b", 60)
    assert again is not None and (again.id, again.claim_token) == (interactive, 2)


def test_concurrent_claims_never_hand_out_a_task_twice(server_store: Store) -> None:
    ids = {enqueue(server_store, f"t{i}") for i in range(200)}
    got: Counter[int] = Counter()
    lock = threading.Lock()

    def worker(n: int) -> None:
        while (task := server_store.claim(f"w{n}", f"run-{n}", 60)) is not None:
            with lock:
                got[task.id] += 1

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert set(got) == ids
    assert max(got.values()) == 1


def test_an_expired_lease_is_taken_over_and_fences_off_the_old_owner(server_store: Store) -> None:
    task_id = enqueue(server_store, "t")
    mine = server_store.claim("old", "run-old", 1)
    assert mine is not None and mine.claim_token == 1
    assert server_store.claim("new", "run-new", 60) is None
    deadline = time.monotonic() + 10
    theirs = None
    while theirs is None and time.monotonic() < deadline:  # the server's clock decides
        theirs = server_store.claim("new", "run-new", 60)
        time.sleep(0.05)
    assert theirs is not None and (theirs.id, theirs.claim_token) == (task_id, 2)
    assert not server_store.heartbeat(task_id, 1, 60)
    with pytest.raises(ClaimLost):
        server_store.apply(Change(task_id, "run-old", status=TaskStatus.PAUSED, token=1))
    server_store.release(task_id, 1)  # a stale release is a no-op
    held = server_store.get_task(task_id)
    assert (held.status, held.claimed_by, held.claim_token) == (TaskStatus.CREATED, "new", 2)
    assert held.lease_until is not None
    assert server_store.heartbeat(task_id, 2, 60)
    server_store.apply(Change(task_id, "run-new", status=TaskStatus.PAUSED, token=2, release=True))
    done = server_store.get_task(task_id)
    assert (done.status, done.lease_until) == (TaskStatus.PAUSED, None)


def test_a_claim_skips_a_row_another_session_has_locked(
    server_store: Store, server_url: str
) -> None:
    """SKIP LOCKED: a worker busy with the first due task (its row locked in an open
    transaction) does not hold up the next worker's claim, which takes the next task at
    once instead of waiting for that transaction to end."""
    import sqlalchemy

    locked, free = enqueue(server_store, "locked"), enqueue(server_store, "free")
    server_store.has_due_tasks()  # a pooled connection, so the claim's time is its own
    holder = sqlalchemy.create_engine(server_url)
    claimed: list[object] = []
    try:
        with holder.connect() as conn, conn.begin():
            query = text("SELECT id FROM bgtaskex_tasks WHERE id = :id FOR UPDATE")
            assert conn.execute(query, {"id": locked}).scalar() == locked
            claimer = threading.Thread(
                target=lambda: claimed.append(server_store.claim("w", "run", 60)), daemon=True
            )
            started = time.monotonic()
            claimer.start()
            claimer.join(1.0)  # a claim that waits would wait until the holder commits
            took = time.monotonic() - started
            waited = claimer.is_alive()
        claimer.join(30)  # the lock is gone: a claim that waited returns now
    finally:
        holder.dispose()
    assert not waited, "the claim waited for the row another session had locked"
    task = claimed[0]
    assert isinstance(task, Task) and task.id == free, f"claimed {task} in {took:.3f}s"


# -- the runner ----------------------------------------------------------------------------


def claims_settings(url: str, tmp_path: Path, **concurrency: object) -> Settings:
    return Settings(
        database_url=url,
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted",),
        max_execution_time=30.0,
        retry_delay=0.0,  # a dead execute is retried at the next run
        concurrency=Concurrency(**concurrency),  # type: ignore[arg-type]
    )


@pytest.fixture
def workers_client(server_url: str, tmp_path: Path) -> Iterator[Client]:
    with connect(settings=claims_settings(server_url, tmp_path, lock="none", workers=4)) as c:
        yield c


def test_workers_drain_every_task_once(workers_client: Client, tmp_path: Path) -> None:
    log = str(tmp_path / "calls.jsonl")
    ids = [
        workers_client.enqueue(f"t{i}", [(SCRIPTED, {"name": f"t{i}", "log": log})] * 2)
        for i in range(60)
    ]
    summary = workers_client.run_once()
    assert (summary.finished, summary.lost) == (60, 0)
    assert all(workers_client.get(i).status is TaskStatus.FINISHED for i in ids)
    with open(log, encoding="utf-8") as handle:
        lines = handle.read().count('"hook": "execute"')
    assert lines == 120, "each of the 120 actions executed once"
    workers = {workers_client.get(i).claimed_by for i in ids}
    assert len(workers) > 1, workers
    assert all(workers_client.get(i).lease_until is None for i in ids), "claims released"


def test_a_claim_lost_at_a_checkpoint_stops_the_action_and_its_writes(
    server_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another worker took the task over (its token is newer): the next checkpoint
    raises in the action, and nothing more is written about the task. (A lease of 30 s:
    the checkpoint finds out before any heartbeat does.)"""
    settings = claims_settings(server_url, tmp_path, lock="none", lease=30.0)
    log = str(tmp_path / "calls.jsonl")
    with connect(settings=settings) as client:
        params = {"name": "A", "log": log, "total": None, "step": 0.02}
        task_id = client.enqueue("t", [("tests.ops_actions:Looper", params)])
        result: list[object] = []
        runner = threading.Thread(target=lambda: result.append(client.run_once()))
        with caplog.at_level(logging.WARNING, logger="bgtaskex"):
            runner.start()
            deadline = time.monotonic() + 10
            while "execute" not in Path(log).read_text() if Path(log).exists() else True:
                assert time.monotonic() < deadline, "execute never started"
                time.sleep(0.02)
            bump_token(client.store, task_id)  # another worker took it over
            runner.join(20)
        assert not runner.is_alive(), "the action was not stopped"
        summary = result[0]
        assert summary.lost == 1  # type: ignore[attr-defined]
        task = client.get(task_id)
        assert task.status is TaskStatus.RUNNING, "the paused write was refused"
        assert not [e for e in client.events(task_id) if e.new_status == "paused"]
        assert "lost the claim" in caplog.text


def test_a_claim_lost_under_a_running_hook_ends_the_process(
    server_url: str, tmp_path: Path
) -> None:
    """The heartbeat finds that another worker took the task over while a hook that
    never checkpoints runs: the process exits at once (code 4, one critical line), so
    the hook cannot go on beside the new owner."""
    log = tmp_path / "calls.jsonl"
    env = {**isolated_env(tmp_path / "home"), "BGTASKEX_CONCURRENCY": "lock=none lease=1s"}
    plan = {"execute": ["sleep:30"]}
    with connect(settings=claims_settings(server_url, tmp_path, lock="none")) as client:
        task_id = client.enqueue("t", [(SCRIPTED, {"name": "A", "log": str(log), "plan": plan})])
        run = subprocess.Popen(
            command("--database-url", server_url, "--import", "tests.scripted", "run-once"),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            while "execute" not in (log.read_text() if log.exists() else ""):
                assert time.monotonic() < deadline and run.poll() is None, "no execute"
                time.sleep(0.02)
            bump_token(client.store, task_id)  # another worker took it over
            _out, err = run.communicate(timeout=10)  # the hook alone sleeps 30 s
        finally:
            run.kill()
        assert run.returncode == 4, err
        assert "another run claimed it" in err and "exiting now" in err, err
        task = client.get(task_id)
        assert task.status is TaskStatus.RUNNING
        assert not [e for e in client.events(task_id) if e.error], "nothing written after"


def test_a_heartbeating_worker_keeps_its_task(server_url: str, tmp_path: Path) -> None:
    """A lease of 2 s, an execute of 5 s: the heartbeat holds the claim all along. (In
    this process: a lease so short that a slow machine misses it would end pytest.)"""
    settings = claims_settings(server_url, tmp_path, lock="none", lease=2.0)
    log = str(tmp_path / "calls.jsonl")
    with connect(settings=settings) as client:
        plan = {"execute": ["sleep:5"]}
        task_id = client.enqueue("t", [(SCRIPTED, {"name": "A", "log": log, "plan": plan})])
        runner = threading.Thread(target=client.run_once)
        runner.start()
        rival = Store(server_url)
        try:
            taken = []
            while runner.is_alive():
                if (claim := rival.claim("rival", "run-rival", 60)) is not None:
                    taken.append(claim.id)
                time.sleep(0.1)
        finally:
            rival.close()
        runner.join()
        assert taken == []
        task = client.get(task_id)
        assert (task.status, task.claim_token) == (TaskStatus.FINISHED, 1)


# -- the cluster lock ---------------------------------------------------------------------


def test_the_database_lock_admits_one_run(server_url: str) -> None:
    first, second = Store(server_url), Store(server_url)
    try:
        assert not second.admin.cluster_lock_held()
        with first.cluster_lock():
            assert second.admin.cluster_lock_held()
            with pytest.raises(LockBusy, match="database lock"), second.cluster_lock():
                pass
        assert not second.admin.cluster_lock_held()
        with second.cluster_lock():
            pass
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("lock", ["database", "none"])
def test_sqlite_refuses_the_cluster_modes(tmp_path: Path, lock: str) -> None:
    settings = claims_settings(f"sqlite:///{tmp_path / 'b.db'}", tmp_path, lock=lock)
    with connect(settings=settings) as client, pytest.raises(ConfigError, match="PostgreSQL"):
        client.run_once()


# -- the migration from the previous release ----------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", *SERVERS])
def test_upgrading_a_0001_database_keeps_its_tasks(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    elif backend == "postgres":
        url = str(request.getfixturevalue("pg_schema_url"))
    else:
        url = str(request.getfixturevalue("mariadb_database_url"))
    old = Store(url)
    old.upgrade("0001")
    assert old.schema_revision() == "0001"
    with old._engine.begin() as conn:  # rows as the previous release wrote them
        conn.execute(
            text(
                "INSERT INTO bgtaskex_tasks (id, name, type, queue, status, run_order, "
                "current_rank, created_at, updated_at) VALUES (1, 'kept', 'cron', 'default', "
                "'created', 14, NULL, '2026-11-01 10:00:00', '2026-11-01 10:00:00')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO bgtaskex_actions (task_id, rank, ref, status, attempts, params, "
                "initial_params, elapsed) VALUES (1, 1, :ref, 'pending', 0, '{}', '{}', 0)"
            ),
            {"ref": NOOP},
        )
    old.close()
    with connect(settings=claims_settings(url, tmp_path)) as client:
        assert client.store.schema_revision() == HEAD_REVISION
        kept = client.get(1)
        assert (kept.name, kept.status, kept.claim_token, kept.lease_until) == (
            "kept",
            TaskStatus.CREATED,
            0,
            None,
        )
        assert client.run_once().finished == 1
        assert client.get(1).status is TaskStatus.FINISHED


# -- a frozen worker's row locks ----------------------------------------------------------


def test_a_store_with_an_idle_limit_sets_it_on_every_session(server_url: str) -> None:
    """The server ends a session idle in a transaction longer than the lease (see
    test_scaleout's frozen worker): PostgreSQL's idle_in_transaction_session_timeout,
    MariaDB's idle_transaction_timeout, on every connection of the store."""
    store = Store(server_url, idle_in_transaction=3.0)
    try:
        with store._engine.connect() as first, store._engine.connect() as second:
            for conn in (first, second):
                if conn.dialect.name == "postgresql":
                    query = "SELECT current_setting('idle_in_transaction_session_timeout')"
                    assert conn.execute(text(query)).scalar() == "3s"
                else:
                    query = "SELECT @@session.idle_transaction_timeout"
                    assert conn.execute(text(query)).scalar() == 3
    finally:
        store.close()


def test_a_failed_idle_limit_on_mariadb_is_an_error(
    mariadb_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not swallowed: a server that refuses the SET (an unknown variable, as before
    MariaDB 10.3) fails the connection with a storage error, instead of leaving a frozen
    worker's row locks unbounded without a word."""
    from bgtaskex.store import engine

    monkeypatch.setattr(engine, "mysql_idle_timeout", lambda *_: "SET SESSION no_such_limit = 1")
    store = Store(mariadb_database_url, idle_in_transaction=3.0)
    try:
        with pytest.raises(StorageError, match="no_such_limit") as refused:
            store.ensure_schema()
        assert refused.value.exit_code == 4
    finally:
        store.close()
