"""The run's statements sent on the driver's cursor (`store/direct.py`): they read what
SQLAlchemy reads, announce themselves to its cursor events, and fail as it fails."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import event

from bgtaskex.client import Client
from bgtaskex.exceptions import DatabaseUnavailable, StorageError, TaskInterrupted
from bgtaskex.models import ActionChange, ActionStatus, Change, NewEvent, Progress, TaskStatus
from bgtaskex.store import Store
from bgtaskex.store import statements as sql
from bgtaskex.store.rows import task_of_joined

NOOP = "tests.scripted:Noop"


def _read_both(store: Store, task_id: int) -> tuple[Any, Any]:
    with store._read() as conn:
        direct = task_of_joined(store._direct.execute(conn, sql.TASK_BY_ID, {"v_task_id": task_id}))
        plain = task_of_joined(conn.execute(sql.TASK_BY_ID, {"v_task_id": task_id}).all())
    return direct, plain


def test_a_task_reads_the_same_as_through_sqlalchemy(client: Client, store: Store) -> None:
    """Every column and its type: timestamps aware, params JSON, floats, nulls."""
    params = {"n": 1, "text": "é\u2028\"'", "nested": {"list": [1.5, None, True]}}
    task_id = client.enqueue("same", [(NOOP, params), (NOOP, {})])
    client.run_once()
    with store._write() as conn:  # progress and elapsed time as a run leaves them
        conn.execute(
            sqlalchemy.update(sql.t.actions)
            .where(sql.t.actions.c.task_id == task_id)
            .values(progress_done=3, progress_total=7, progress_message="m", elapsed=0.25)
        )
    direct, plain = _read_both(store, task_id)
    assert direct == plain
    assert direct.status is TaskStatus.FINISHED and direct.ended_at.tzinfo is not None
    assert direct.actions[0].params == params
    assert direct.actions[1].progress == Progress(3, 7, "m") and direct.actions[1].elapsed == 0.25


def test_direct_statements_are_announced_to_the_cursor_events(client: Client, store: Store) -> None:
    """Tracing and the commit counters listen there: a run's writes must be seen."""
    seen: list[str] = []

    def announced(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # On PostgreSQL a flush is announced as one script of its statements.
        seen.extend(part.split(None, 1)[0].upper() for part in statement.split(";\n"))

    event.listen(store._engine, "before_cursor_execute", announced)
    try:
        client.enqueue("seen", [(NOOP, {})])
        client.run_once()
    finally:
        event.remove(store._engine, "before_cursor_execute", announced)
    assert seen.count("UPDATE") >= 4 and "INSERT" in seen and "SELECT" in seen


#: What a literal must survive: quotes, a statement separator, the driver's placeholder
#: characters, backslashes, a dollar quote, a comment and non-ASCII text.
AWKWARD = "it's; DROP TABLE x; -- %s %(v)s \\' \\n $$ /* é\u2028 ✓ */"


def test_a_flush_binds_its_values_as_the_driver_does(client: Client, store: Store) -> None:
    """On PostgreSQL a flush is one script of literals (`literal_script`): what a run
    writes comes back exactly, whatever characters the params and messages hold."""
    task_id = client.enqueue("awkward", [(NOOP, {}), (NOOP, {})])
    params = {"text": AWKWARD, AWKWARD: [AWKWARD, 1.5, None, True], "n": -(2**53)}
    change = Change(
        task_id,
        "run-a",
        status=TaskStatus.PAUSED,
        current_rank=1,
        actions=(ActionChange(1, ActionStatus.ACTIVE, params, 1, None, 0.5, AWKWARD),),
        events=(NewEvent(1, "pending", "active", AWKWARD, AWKWARD),),
    )
    store.apply(change)
    task = store.get_task(task_id)
    assert task.status is TaskStatus.PAUSED
    assert task.actions[0].params == params and task.actions[0].last_failure == AWKWARD
    assert [(e.message, e.error) for e in store.events(task_id)][-1] == (AWKWARD, AWKWARD)


def test_a_refused_write_in_a_flush_writes_nothing(client: Client, store: Store) -> None:
    """The task's write matches no row (the task ended meanwhile): the action's params and
    the event sent with it in the same flush are rolled back too."""
    task_id = client.enqueue("ended", [(NOOP, {"kept": 1})])
    client.cancel(task_id)
    before = store.events(task_id)
    change = Change(
        task_id,
        "run-a",
        status=TaskStatus.PAUSED,
        current_rank=1,
        actions=(ActionChange(1, ActionStatus.ACTIVE, {"lost": 1}, 1),),
        events=(NewEvent(1, "pending", "active", "must not stay"),),
    )
    with pytest.raises(TaskInterrupted):
        store.apply(change)
    assert store.get_task(task_id).actions[0].params == {"kept": 1}
    assert store.events(task_id) == before


def _flush(task_id: int, message: str = "m", params: Any = None) -> Change:
    """A run's flush of task `task_id`: its status, an action's params and an event."""
    return Change(
        task_id,
        "run-a",
        status=TaskStatus.PAUSED,
        current_rank=1,
        actions=(ActionChange(1, ActionStatus.ACTIVE, params or {"p": 1}, 1),),
        events=(NewEvent(1, "pending", "active", message),),
    )


@pytest.mark.parametrize("message", ["a NUL: \x00", "a lone surrogate: caf\udce9"])
def test_a_value_the_driver_cannot_bind_is_a_storage_error(
    client: Client, store: Store, message: str
) -> None:
    """A value PostgreSQL cannot take (a NUL; a lone surrogate, which has no UTF-8) that
    reached a flush past `statements.storable`: a storage error, as one statement at a
    time gives it, not the driver's own exception (an internal error, exit 1, out of the
    CLI); nothing is written and the store goes on."""
    task_id = client.enqueue("unbindable", [(NOOP, {})])
    row = {**sql.event_row(task_id, datetime.now(UTC), None, _note()), "message": message}
    writes = [(sql.insert_events(1), sql.events_values([row]))] * 2  # two: one script
    before = len(store.events(task_id))
    with store.bound():
        try:
            with store._write() as conn:
                store._direct.rowcounts(conn, writes)
        except StorageError:
            pass  # PostgreSQL refuses both; SQLite and MariaDB may store them
        else:
            assert store.dialect != "postgresql"
    if store.dialect == "postgresql":
        assert len(store.events(task_id)) == before
    assert client.run_once().finished == 1


def test_a_flush_of_a_task_deleted_meanwhile_is_refused(client: Client, store: Store) -> None:
    """The task was cancelled and purged while a run held it: its flush is refused
    (TaskInterrupted, as the run expects of an ended task), not a storage error from
    the events' foreign key, which one statement at a time is never sent."""
    task_id = client.enqueue("purged", [(NOOP, {}), (NOOP, {})])
    client.cancel(task_id)
    assert store.admin.purge() == 1
    with pytest.raises(TaskInterrupted):
        store.apply(_flush(task_id))
    other = client.enqueue("next", [(NOOP, {})])
    assert client.run_once().finished == 1 and store.get_task(other).status is TaskStatus.FINISHED


def test_a_failed_write_is_a_storage_error_and_the_store_goes_on(
    client: Client, store: Store
) -> None:
    """A write the database refuses (a foreign key) is a storage error, as through
    SQLAlchemy, and the connection is usable after it."""
    task_id = client.enqueue("fk", [(NOOP, {})])
    now = datetime.now(UTC)
    missing = sql.event_row(task_id + 1000, now, None, _note())
    with store.bound():
        with (
            pytest.raises(StorageError),
            store._write() as conn,
        ):
            store._direct.rowcount(conn, sql.insert_events(1), sql.events_values([missing]))
        assert store.get_task(task_id).status is TaskStatus.CREATED
    assert client.run_once().finished == 1


def test_a_session_the_server_ended_is_unavailable_then_reconnected(
    client: Client, store: Store
) -> None:
    """The run's connection killed between two writes: the next write says the
    database is unavailable (not a driver traceback), and the next one reconnects."""
    if store.dialect == "sqlite":
        pytest.skip("SQLite has no server to end a session")
    task_id = client.enqueue("killed", [(NOOP, {})])
    with store.bound():
        _kill(store, store._local.conn)
        row = sql.event_row(task_id, datetime.now(UTC), None, _note())
        with (
            pytest.raises(DatabaseUnavailable),
            store._write() as conn,
        ):
            store._direct.rowcount(conn, sql.insert_events(1), sql.events_values([row]))
    assert client.run_once().finished == 1


def _note() -> Any:
    from bgtaskex.models import NewEvent

    return NewEvent(None, None, None, "a note")


def _kill(store: Store, conn: sqlalchemy.Connection) -> None:
    dbapi = conn.connection.dbapi_connection
    killer = sqlalchemy.create_engine(store.url, isolation_level="AUTOCOMMIT")
    try:
        with killer.connect() as other:
            if store.dialect == "postgresql":
                pid = dbapi.info.backend_pid  # type: ignore[union-attr]
                other.execute(sqlalchemy.text(f"SELECT pg_terminate_backend({int(pid)})"))
            else:
                other.execute(sqlalchemy.text(f"KILL {int(dbapi.thread_id())}"))  # type: ignore[union-attr]
    finally:
        killer.dispose()


def test_narrowed_queries_are_not_kept_per_call(client: Client, store: Store) -> None:
    """A run serving some queues builds its due query per pick: those are not
    prepared and kept, or a daemon's memory would grow with every task it takes."""
    from bgtaskex.plan import Routing

    client.enqueue("a", [(NOOP, {})], queue="reports")
    routing = Routing(queues=("reports",), excluded=("other",))
    before = len(store._direct._prepared)
    for _ in range(50):
        found = store.next_task(routing=routing, exclude=[10**9])
        assert found is not None and found.name == "a"
    assert len(store._direct._prepared) <= before + 1


def test_narrowed_claims_are_not_kept_per_call(client: Client, store: Store) -> None:
    """The same for the claims of `lock = "none"` workers serving some queues."""
    from bgtaskex.plan import Routing

    for i in range(30):
        client.enqueue(f"c{i}", [(NOOP, {})], queue="reports")
    routing = Routing(queues=("reports",))
    before = len(store._direct._prepared)
    names = {store.claim("w", f"run{i}", 60.0, routing=routing).name for i in range(30)}  # type: ignore[union-attr]
    assert names == {f"c{i}" for i in range(30)}
    assert len(store._direct._prepared) <= before + 3


@pytest.mark.postgres
def test_a_script_whose_results_do_not_line_up_is_a_storage_error(pg_schema_url: str) -> None:
    """Each count is read against its write: a script (PostgreSQL's flush) that gives more
    results than it has writes (a statement holding two) must not be read as counts,
    shifted."""
    store = Store(pg_schema_url)
    try:
        store.ensure_schema()
        table = sql.t.tasks.name
        two = sqlalchemy.text(f"UPDATE {table} SET name = name WHERE id < 0; SELECT 1")
        one = sqlalchemy.text(f"UPDATE {table} SET name = name WHERE id < 0")
        with (
            pytest.raises(StorageError, match="2 statements gave 3 results"),
            store._write() as conn,
        ):
            store._direct.rowcounts(conn, [(two, {}), (one, {})])
    finally:
        store.close()
