"""A run that loses its lock while an action executes (the lock file removed by a tmp
cleaner, the database session holding the cluster lock ended by the server) must not
let a second run execute the same action beside it, even when the action ignores
`should_stop()`: the task is held under a lease, which the second run passes over. The
first run says its lock is gone and starts nothing more; the second does the rest."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy

from bgtaskex.store.engine import mysql_lock_name
from tests.acceptance.conftest import Bgx, entries, finish, hook_started, scripted, wait_until

pytestmark = pytest.mark.timeout(120)

IMPORT = ("--import", "tests.scripted")
STUBBORN = {"execute": ["sleep:6"]}  # ignores should_stop() and the deadline


def _two_tasks(bgx: Bgx, url: str, log: Path) -> tuple[int, int]:
    first = bgx.ok("--database-url", url, *IMPORT, "enqueue", "a", scripted(log, STUBBORN), "-q")
    second = bgx.ok(
        "--database-url", url, *IMPORT, "enqueue", "b", scripted(log, {}, name="B"), "-q"
    )
    return int(first.stdout), int(second.stdout)


def _lose_the_lock_under(
    bgx: Bgx,
    url: str,
    log: Path,
    env: dict[str, str],
    take_the_lock_away: Callable[[subprocess.Popen[str]], None],
    *more: object,
) -> None:
    stubborn, other = _two_tasks(bgx, url, log)
    holder = bgx.start(
        "--database-url", url, *IMPORT, "run-once", "--max-execution-time", "3", *more, env=env
    )
    wait_until(hook_started(log, "execute", holder.pid), "the holder's execute", proc=holder)
    take_the_lock_away(holder)

    second = bgx("--database-url", url, *IMPORT, "run-once", *more, env=env)
    assert second.returncode == 0, (second.stdout, second.stderr)
    code, out, err = finish(holder)
    assert code == 0, (out, err)

    calls = [(e["name"], e["hook"], e["pid"]) for e in entries(log)]
    assert [c for c in calls if c[:2] == ("A", "execute")] == [("A", "execute", holder.pid)], (
        "the stubborn action ran once, in the run that lost its lock",
        calls,
        second.stderr,
    )
    assert "run lock is gone" in err, err
    assert ("B", "execute", second_pid(log)) in calls  # the second run did the rest
    assert bgx.show(url, stubborn)["status"] == "finished"
    assert bgx.show(url, other)["status"] == "finished"


def second_pid(log: Path) -> int:
    return next(e["pid"] for e in entries(log) if e["name"] == "B")


def test_a_removed_lock_file_lets_no_second_run_into_a_running_action(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    lock = tmp_path / "run.lock"

    def remove(_holder: subprocess.Popen[str]) -> None:
        os.unlink(lock)  # a tmp cleaner

    _lose_the_lock_under(
        bgx, sqlite_url, tmp_path / "calls.jsonl", bgx.env, remove, "--lock-file", lock
    )


def test_a_replaced_lock_file_lets_no_second_run_into_a_running_action(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    lock = tmp_path / "run.lock"

    def replace(_holder: subprocess.Popen[str]) -> None:
        lock.with_suffix(".new").write_text("")
        os.replace(lock.with_suffix(".new"), lock)  # logrotate's create, say

    _lose_the_lock_under(
        bgx, sqlite_url, tmp_path / "calls.jsonl", bgx.env, replace, "--lock-file", lock
    )


def _end_lock_session(url: str) -> None:
    """End the server session holding bgtaskex's cluster lock, as a restart, a
    failover or an idle-session timeout would."""
    engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                pid = conn.execute(
                    sqlalchemy.text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                        "AND classid = hashtext('bgtaskex')::oid "
                        "AND objid = hashtext(current_schema())::oid"
                    )
                ).scalar_one()
                assert conn.execute(sqlalchemy.text(f"SELECT pg_terminate_backend({pid})")).scalar()
            else:
                name = mysql_lock_name("run")
                holder = conn.execute(sqlalchemy.text(f"SELECT IS_USED_LOCK({name})")).scalar()
                assert holder is not None
                conn.execute(sqlalchemy.text(f"KILL CONNECTION {int(holder)}"))
    finally:
        engine.dispose()


def test_a_lost_cluster_lock_lets_no_second_run_into_a_running_action(
    bgx: Bgx, server_url: str, tmp_path: Path
) -> None:
    env = {**bgx.env, "BGTASKEX_CONCURRENCY": "lock=database"}

    def end_session(_holder: subprocess.Popen[str]) -> None:
        _end_lock_session(server_url)

    _lose_the_lock_under(bgx, server_url, tmp_path / "calls.jsonl", env, end_session)


def test_kill_9_is_still_recovered_by_the_next_run(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """The lease of a run killed with SIGKILL does not hold its task: the next run on
    the host sees that the holder is dead and recovers the task at once."""
    log = tmp_path / "calls.jsonl"
    added = bgx.ok(
        "--database-url", sqlite_url, *IMPORT, "enqueue", "a",
        scripted(log, {"execute": ["sleep:30", "true"]}), "-q",
    )  # fmt: skip
    holder = bgx.start("--database-url", sqlite_url, *IMPORT, "run-once")
    wait_until(hook_started(log, "execute", holder.pid), "the holder's execute", proc=holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait(10)
    after = bgx.ok("--database-url", sqlite_url, *IMPORT, "run-once")
    assert "1 finished" in after.stdout, (after.stdout, after.stderr)
    task = bgx.show(sqlite_url, int(added.stdout))
    assert task["status"] == "finished"
    assert task["actions"][0]["attempts"] == 1


@pytest.mark.postgres
def test_a_run_cut_off_from_the_database_exits_before_its_lease_runs_out(
    bgx: Bgx, pg_database_url: str, tmp_path: Path
) -> None:
    """The database is out of this run's reach, not of others' (a partition): no
    heartbeat gets through, and the stubborn action would go on past the lease while
    another run took the task over. The run exits (code 4) before its lease runs out;
    the next run recovers the task as after a crash."""
    log = tmp_path / "calls.jsonl"
    url = pg_database_url
    env = {**bgx.env, "BGTASKEX_CONCURRENCY": "lease=3s"}
    plan = {"execute": ["sleep:30", "true"]}
    added = bgx.ok("--database-url", url, *IMPORT, "enqueue", "a", scripted(log, plan), "-q")
    holder = bgx.start("--database-url", url, *IMPORT, "run-once", env=env)
    wait_until(hook_started(log, "execute", holder.pid), "the holder's execute", proc=holder)

    name = sqlalchemy.make_url(url).database
    admin = sqlalchemy.create_engine(url.rsplit("/", 1)[0] + "/test", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
            conn.exec_driver_sql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                f"WHERE datname = '{name}' AND pid <> pg_backend_pid()"
            )
        code, out, err = finish(holder, timeout=20)  # the action alone would sleep 30 s
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        admin.dispose()
    assert code == 4, (code, out, err)
    assert "exiting now" in err, err

    after = bgx.ok("--database-url", url, *IMPORT, "run-once", env=env)
    assert "1 finished" in after.stdout, (after.stdout, after.stderr)
    task = bgx.show(url, int(added.stdout))
    assert (task["status"], task["actions"][0]["attempts"]) == ("finished", 1)
    assert [e["hook"] for e in entries(log)] == ["init", "execute", "change", "execute"]


class Blackhole:
    """A TCP proxy to the database that can go silent: once `swallow()` is called, it
    keeps every connection open and forwards nothing, as a dropped route, a NAT that
    forgot the flow or a hung proxy does (no error ever comes back)."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.silent = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def swallow(self) -> None:
        self.silent.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if self.silent.is_set():
                    continue  # read and dropped: the peer hears nothing, ever
                dst.sendall(data)

    def close(self) -> None:
        self.server.close()


@pytest.mark.postgres
def test_a_run_whose_database_goes_silent_exits_before_its_lease_runs_out(
    bgx: Bgx, pg_schema_url: str, tmp_path: Path
) -> None:
    """No error, no answer: the heartbeat hangs on the network. The watchdog, which only
    reads the clock, ends the run before its lease runs out, so that no other run
    executes the stubborn action beside it."""
    log = tmp_path / "calls.jsonl"
    url = sqlalchemy.make_url(pg_schema_url)
    proxy = Blackhole(url.host or "127.0.0.1", url.port or 5432)
    through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {**bgx.env, "BGTASKEX_CONCURRENCY": "lease=3s"}
    try:
        added = bgx.ok(
            "--database-url", pg_schema_url, *IMPORT, "enqueue", "a",
            scripted(log, {"execute": ["sleep:30", "true"]}), "-q",
        )  # fmt: skip
        holder = bgx.start("--database-url", through, *IMPORT, "run-once", env=env)
        wait_until(hook_started(log, "execute", holder.pid), "the holder's execute", proc=holder)
        proxy.swallow()
        code, out, err = finish(holder, timeout=20)  # the action alone would sleep 30 s
    finally:
        proxy.close()
    assert code == 4, (code, out, err)
    assert "exiting now" in err, err
    after = bgx.ok("--database-url", pg_schema_url, *IMPORT, "run-once", env=env)
    assert "1 finished" in after.stdout, (after.stdout, after.stderr)
    task = bgx.show(pg_schema_url, int(added.stdout))
    assert (task["status"], task["actions"][0]["attempts"]) == ("finished", 1)


def test_a_run_stopped_past_its_lease_exits_when_it_wakes(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """SIGSTOP past the lease (a paused VM, a debugger): a second run takes the task
    over; woken up, the first exits at once instead of going on beside it."""
    log = tmp_path / "calls.jsonl"
    env = {**bgx.env, "BGTASKEX_CONCURRENCY": "lease=2s"}
    bgx.ok(
        "--database-url", sqlite_url, *IMPORT, "enqueue", "a",
        scripted(log, {"execute": ["sleep:30", "true"]}), "-q",
    )  # fmt: skip
    holder = bgx.start(
        "--database-url", sqlite_url, *IMPORT, "run-once", "--lock-file", tmp_path / "a.lock",
        env=env,
    )  # fmt: skip
    wait_until(hook_started(log, "execute", holder.pid), "the holder's execute", proc=holder)
    holder.send_signal(signal.SIGSTOP)
    try:
        wait_until(lambda: lease_over(sqlite_url), "the holder's lease to run out", timeout=10)
        second = bgx(
            "--database-url", sqlite_url, *IMPORT, "run-once", "--lock-file", tmp_path / "b.lock",
            env=env,
        )  # fmt: skip
    finally:
        holder.send_signal(signal.SIGCONT)
    code, out, err = finish(holder, timeout=10)
    assert code == 4, (code, out, err)
    assert "exiting now" in err, err
    assert "1 finished" in second.stdout, (second.stdout, second.stderr)


def lease_over(sqlite_url: str) -> bool:
    engine = sqlalchemy.create_engine(sqlite_url)
    try:
        with engine.connect() as conn:
            until = conn.execute(sqlalchemy.text("SELECT lease_until FROM bgtaskex_tasks")).scalar()
    finally:
        engine.dispose()
    return until is not None and str(until) < datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
