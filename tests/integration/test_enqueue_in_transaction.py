"""Enqueue inside the caller's transaction (#14, part 5): `enqueue(..., connection=conn)`
writes the task with the application's connection, uncommitted: no task for a
rolled-back order, no order without its task. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, event, insert, make_url, select

from bgtaskex.client import Client, connect
from bgtaskex.exceptions import StorageError, TaskNotFound, UsageError
from bgtaskex.models import TaskStatus
from bgtaskex.store import writes
from tests.conftest import MARIADB_URL, _fresh_database_url
from tests.support.appdb import create_app_schema, opened_engine, tickets

NOOP = "tests.scripted:Noop"


class Refused(Exception):
    """The application's reason to roll back."""


def order(conn: object, title: str) -> None:
    conn.execute(  # type: ignore[attr-defined]
        insert(tickets).values(created_at=datetime(2026, 1, 1), status="open", title=title)
    )


def orders(db_url: str) -> list[str]:
    with opened_engine(db_url) as engine, engine.connect() as conn:
        return sorted(conn.execute(select(tickets.c.title)).scalars())


def test_the_task_exists_only_if_the_caller_commits(client: Client, db_url: str) -> None:
    create_app_schema(db_url)
    with opened_engine(db_url) as engine:
        with engine.begin() as conn:
            order(conn, "kept")
            task_id = client.enqueue("ship kept", [NOOP], type="interactive", connection=conn)
            with pytest.raises(TaskNotFound):
                client.get(task_id)  # bgtaskex's own connection: not committed yet
        assert client.get(task_id).status is TaskStatus.CREATED  # committed with the order
        with pytest.raises(Refused), engine.begin() as conn:
            order(conn, "rolled back")
            client.enqueue("ship rolled back", [NOOP], connection=conn)
            raise Refused
    assert orders(db_url) == ["kept"]
    assert [task.name for task in client.list_tasks()] == ["ship kept"]
    assert client.run_once().finished == 1


def test_a_unique_key_inside_the_callers_transaction(
    client: Client, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key already held: the existing id comes back and the caller's transaction goes
    on, also when the key was taken between the look-up and the insert (the insert
    fails; on PostgreSQL only its savepoint is rolled back)."""
    create_app_schema(db_url)
    held = client.enqueue("held", [NOOP], unique_key="k")
    real_holder = writes._key_holder
    looked: list[bool] = []

    def late_holder(conn: Connection, key: str, *, latest: bool) -> int | None:
        looked.append(latest)  # the first look misses the holder: the race, made certain
        return real_holder(conn, key, latest=latest) if latest else None

    with opened_engine(db_url) as engine, engine.begin() as conn:
        order(conn, "before")
        monkeypatch.setattr(writes, "_key_holder", late_holder)
        again = client.enqueue_unique("again", [NOOP], unique_key="k", connection=conn)
        monkeypatch.undo()
        assert again == (held, False) and looked == [False, True]
        created = client.enqueue_unique("new", [NOOP], unique_key="k2", connection=conn)
        order(conn, "after")
    assert created.created
    assert orders(db_url) == ["after", "before"]
    assert client.get(created.id).unique_key == "k2"
    assert len(client.list_tasks()) == 2


def test_a_connection_to_another_database_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mine.db'}"
    with connect(url) as client:
        for other in (f"sqlite:///{tmp_path / 'other.db'}", "sqlite://"):
            with (
                opened_engine(other) as engine,
                engine.begin() as conn,
                pytest.raises(UsageError, match="same database"),
            ):
                client.enqueue("x", [NOOP], connection=conn)
        with pytest.raises(UsageError, match="Connection"):
            client.enqueue("x", [NOOP], connection="conn")  # type: ignore[arg-type]
        assert client.list_tasks() == []


#: connect_args that put each backend's driver in autocommit mode by itself
DRIVER_AUTOCOMMIT: dict[str, dict[str, object]] = {
    "sqlite": {"isolation_level": None},
    "postgresql": {"autocommit": True},
    "mysql": {"autocommit": True},
}


def _driver_autocommit_engine(url: str) -> Engine:
    backend = make_url(url).get_backend_name()
    return create_engine(url, connect_args=DRIVER_AUTOCOMMIT[backend.replace("mariadb", "mysql")])


def test_an_autocommit_connection_is_refused(client: Client, db_url: str) -> None:
    """Attack #14 finding 17: in autocommit mode each row commits alone, so a run could
    end the task before its actions exist, and a rollback undoes nothing: refused, with
    nothing written. SQLAlchemy's AUTOCOMMIT (engine, connection) and the driver's own."""
    per_connection = create_engine(db_url)
    engines = [create_engine(db_url, isolation_level="AUTOCOMMIT"), per_connection]
    engines.append(_driver_autocommit_engine(db_url))
    try:
        for engine in engines:
            with engine.connect() as conn:
                if engine is per_connection:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                with pytest.raises(UsageError, match="connection is in autocommit mode"):
                    client.enqueue("x", [NOOP], connection=conn)
    finally:
        for engine in engines:
            engine.dispose()
    assert client.list_tasks() == []


def test_an_autocommit_driver_in_a_transaction_begun_by_hand(client: Client, db_url: str) -> None:
    """A driver in autocommit mode inside a transaction its owner began (SQLAlchemy's
    recipe for SQLite: BEGIN in the `begin` event) is a transaction: accepted, and the
    task exists only if it commits."""
    engine = _driver_autocommit_engine(db_url)
    event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
    try:
        with pytest.raises(Refused), engine.begin() as conn:
            client.enqueue("rolled back", [NOOP], connection=conn)
            raise Refused
        with engine.connect() as conn:  # not in a transaction: the enqueue begins one
            task_id = client.enqueue("kept", [NOOP], connection=conn)
            with pytest.raises(TaskNotFound):
                client.get(task_id)
            conn.commit()
    finally:
        engine.dispose()
    assert [task.name for task in client.list_tasks()] == ["kept"]


def test_a_connection_not_in_a_transaction(client: Client, db_url: str) -> None:
    """SQLAlchemy 2 autobegins: the enqueue begins the connection's transaction and leaves
    it open; its owner commits or rolls back it (bgtaskex never commits it)."""
    create_app_schema(db_url)
    with opened_engine(db_url) as engine, engine.connect() as conn:
        assert not conn.in_transaction()
        gone = client.enqueue("gone", [NOOP], connection=conn)
        assert conn.in_transaction()
        order(conn, "gone")
        conn.rollback()
        with pytest.raises(TaskNotFound):
            client.get(gone)
        kept = client.enqueue("kept", [NOOP], connection=conn)
        order(conn, "kept")
        with pytest.raises(TaskNotFound):
            client.get(kept)
        conn.commit()
    assert orders(db_url) == ["kept"]
    assert [task.name for task in client.list_tasks()] == ["kept"]


@contextlib.contextmanager
def _pg_schemas(base: str, count: int) -> Iterator[list[str]]:
    names = [f"bgtaskex_t_{secrets.token_hex(6)}" for _ in range(count)]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        yield names
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        admin.dispose()


def test_a_search_path_to_another_schema_is_refused(pg_schema_url: str) -> None:
    """Attack #14 finding 12: PostgreSQL, the same database, but the connection's
    search_path leads to another install, to no bgtaskex tables, or to bgtaskex's tables
    from another current schema (the wake-up channel's name): refused, nothing written."""
    url = make_url(pg_schema_url)
    mine = str(url.query["options"]).split("=", 1)[1]
    base = url.difference_update_query(["options"])

    def on(path: str) -> str:
        with_path = base.update_query_dict({"options": f"-csearch_path={path}"})
        return with_path.render_as_string(hide_password=False)

    with (
        _pg_schemas(base.render_as_string(hide_password=False), 2) as (other, empty),
        connect(pg_schema_url) as client,
        connect(on(other)) as theirs,
    ):
        refused = {
            other: f"tables are in '{other}', not bgtaskex's in '{mine}'",
            empty: f"tables are nowhere \\(no bgtaskex tables from schema '{empty}'\\)",
            f"{empty},{mine}": f"current schema is '{empty}', bgtaskex's is '{mine}' "
            f"\\(the tables resolve in '{mine}' on both\\)",
        }
        for path, message in refused.items():
            with (
                opened_engine(on(path)) as engine,
                engine.begin() as conn,
                pytest.raises(UsageError, match=message),
            ):
                client.enqueue("x", [NOOP], connection=conn)
        assert client.list_tasks() == [] and theirs.list_tasks() == []
        with opened_engine(on(f"{mine},{other}")) as engine, engine.begin() as conn:
            task_id = client.enqueue("mine", [NOOP], connection=conn)
        assert client.get(task_id).name == "mine" and theirs.list_tasks() == []


def test_a_mariadb_session_on_another_database_is_refused(mariadb_database_url: str) -> None:
    """MariaDB: the URL names bgtaskex's database, but the session switched (USE) to
    another install's: refused, nothing written."""
    other_url = contextlib.contextmanager(_fresh_database_url)(MARIADB_URL, "")
    with (
        other_url as other,
        connect(mariadb_database_url) as client,
        connect(other) as theirs,
        opened_engine(mariadb_database_url) as engine,
        engine.begin() as conn,
    ):
        conn.exec_driver_sql(f"USE {make_url(other).database}")
        with pytest.raises(UsageError, match="tables are in 'app_"):
            client.enqueue("x", [NOOP], connection=conn)
        assert client.list_tasks() == [] and theirs.list_tasks() == []


def test_the_wake_up_goes_out_at_commit(pg_schema_url: str) -> None:
    """PostgreSQL: the NOTIFY of an interactive task, sent in the caller's transaction,
    reaches a listening daemon at the commit, not before (and never on a rollback)."""
    with connect(pg_schema_url) as client, opened_engine(pg_schema_url) as engine:
        wake = client.store.wake_ups(0.2)
        try:
            assert next(wake) is None  # listening, nothing yet
            with pytest.raises(Refused), engine.begin() as conn:
                client.enqueue("x", [NOOP], type="interactive", queue="gone", connection=conn)
                raise Refused
            with engine.begin() as conn:
                client.enqueue("x", [NOOP], type="interactive", queue="q", connection=conn)
                assert next(wake) is None  # not before the commit
            assert next(wake) == "q"
        finally:
            wake.close()  # type: ignore[attr-defined]


def _waits_on_a_lock(conn: Connection, pid: int) -> bool:
    query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %(pid)s"
    return conn.exec_driver_sql(query, {"pid": pid}).scalar() == "Lock"


@pytest.mark.parametrize("level", ["READ COMMITTED", "REPEATABLE READ"])
def test_a_key_committed_while_waiting_on_it(
    pg_schema_url: str, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL, two application transactions: the second's enqueue waits on the key
    the first holds, until the first commits. At READ COMMITTED it gets the first's
    task; at REPEATABLE READ its snapshot, older than that commit, can never see it:
    a clear error at once (one insert, no loop), and a retried transaction gets it."""
    inserts: list[int] = []
    real_insert = writes.insert_task

    def counted(*args: object, **kwargs: object) -> int:
        inserts.append(1)
        return real_insert(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(writes, "insert_task", counted)
    with connect(pg_schema_url) as client, opened_engine(pg_schema_url) as engine:
        app = engine.execution_options(isolation_level=level)
        with app.connect() as first, app.connect() as second, engine.connect() as watch:
            first.begin()
            second.begin()
            pid = second.exec_driver_sql("SELECT pg_backend_pid()").scalar()  # the snapshot
            held = client.enqueue_unique("a", [NOOP], unique_key="k", connection=first)
            got: list[object] = []

            def enqueue() -> None:
                try:
                    got.append(
                        client.enqueue_unique("b", [NOOP], unique_key="k", connection=second)
                    )
                except StorageError as err:
                    got.append(err)

            waiter = threading.Thread(target=enqueue)
            waiter.start()
            deadline = time.monotonic() + 10
            while not _waits_on_a_lock(watch, int(pid or 0)) and waiter.is_alive():
                assert time.monotonic() < deadline, "the second enqueue never waited"
                time.sleep(0.01)
            first.commit()
            waiter.join(10)
            assert not waiter.is_alive()
            assert second.exec_driver_sql("SELECT 1").scalar() == 1  # its transaction goes on
            second.rollback()
            if level == "READ COMMITTED":
                assert got == [(held.id, False)]
            else:
                assert isinstance(got[0], StorageError), got
                assert str(got[0]) == (
                    "unique key 'k' is held by a task committed after this transaction's "
                    "snapshot (REPEATABLE READ): retry the transaction"
                )
            assert len(inserts) == 2  # the holder's, and the one that found it taken
            with second.begin():
                retried = client.enqueue_unique("b", [NOOP], unique_key="k", connection=second)
            assert retried == (held.id, False)
        assert [task.name for task in client.list_tasks()] == ["a"]
