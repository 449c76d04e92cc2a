"""Query plans on SQLite, and the migration against the metadata.

Plans: a fresh SQLite database (schema through bgtaskex) gets a few thousand tasks
(bulk-inserted with stdlib sqlite3: ~2% waiting, the rest finished / failed / cancelled,
over 90 days), then the SQL that bgtaskex executes is captured (a SQLAlchemy
`before_cursor_execute` listener on the store's engine; a recording wrapper around the
probe's stdlib connection) for: the idle probe with retention, one real run
(`runner.run`: next_task, apply, get_task-shaped reads, end of tasks, retention purge),
and the calls the CLI makes (get_task, list_tasks, purge_preview, cancel, check, stats).
Every SELECT / UPDATE / DELETE is then put through EXPLAIN QUERY PLAN on the final
database. A plan line `SCAN <table>` without `USING [COVERING] INDEX` on bgtaskex_tasks,
bgtaskex_actions or bgtaskex_events is a full table scan: the time of that query grows
with the table.

ANALYZE: both ways. `plain` is how bgtaskex's databases are in the field: bgtaskex never
runs ANALYZE (nor PRAGMA optimize), so the planner has no statistics. `analyzed` runs
ANALYZE after loading the rows, as an operator might; its plans depend on the data, so
it is a second opinion, not the contract.
"""

from __future__ import annotations

import json
import re
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, event, inspect, text

from bgtaskex.concurrency import LockMode
from bgtaskex.config import Settings
from bgtaskex.models import (
    ActionChange,
    ActionStatus,
    Change,
    Progress,
    TaskFilter,
    TaskStatus,
    run_order,
)
from bgtaskex.plan import Routing, RunPlan
from bgtaskex.registry import Registry
from bgtaskex.run import runner
from bgtaskex.store import Store, probe
from bgtaskex.tables import metadata
from tests.conftest import MARIADB_URL, PG_URL, _fresh_database_url

TASKS = 3000
WAITING_EVERY = 50  # 2% of the tasks wait: created, paused or running
CHECKED_TABLES = ("bgtaskex_tasks", "bgtaskex_actions", "bgtaskex_events")
FULL_SCAN = re.compile(r"^SCAN (?P<table>\w+)(?: AS \w+)?$")
DAY = 86400.0
NOOP = "bgtaskex.examples:NothingToDo"  # init_params returns False: skipped at once
CHUNKED = "bgtaskex.examples:HashChain"  # resumable: paused / running tasks can go on


# -- the database -------------------------------------------------------------------------


def _stamp(value: datetime) -> str:
    """A timestamp as bgtaskex stores it on SQLite: naive UTC text with microseconds."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _fill(path: Path, now: datetime, *, waiting: bool) -> None:
    """Bulk-insert the ended (`waiting` False) or the waiting tasks among TASKS, one action
    and one event each, ids in creation order."""
    chain = {"rounds": 20, "checkpoint_every": 10, "done": 0, "digest": "00" * 32}
    tasks, actions, events = [], [], []
    for i in range(1, TASKS + 1):
        if (i % WAITING_EVERY == 0) != waiting:
            continue
        created = now - timedelta(days=90) + timedelta(days=90) * i / TASKS
        type_ = "interactive" if i % 5 == 0 else "cron"
        queue = ("default", "reports", "emails", "imports")[i % 4]
        if i % WAITING_EVERY == 0:
            status = ("created", "paused", "running")[(i // WAITING_EVERY) % 3]
        else:
            status = "failed" if i % 11 == 0 else "cancelled" if i % 97 == 0 else "finished"
        ended = status in ("finished", "failed", "cancelled")
        ran = status != "created"
        ended_at = created + timedelta(minutes=5) if ended else None
        updated = ended_at or created
        run_id = f"{i:016x}" if ran else None
        ref = CHUNKED if status in ("paused", "running") else NOOP
        params = json.dumps(chain if ref == CHUNKED else {})
        action_status = {"finished": "done", "created": "pending"}.get(status, status)
        if status in ("paused", "running"):
            action_status = "active"
        ended_text = _stamp(ended_at) if ended_at else None
        started = _stamp(created) if ran else None
        task = (i, f"task-{i}", type_, queue, status, run_order(type_, status), 1 if ran else None)
        tasks.append((*task, run_id, _stamp(created), _stamp(updated), ended_text))
        action = (i, i, 1, ref, action_status, 1 if ran else 0, params, params)
        actions.append((*action, started, ended_text, 1.5))
        events.append((i, i, _stamp(updated), run_id, None, None, status, f"now {status}"))
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO bgtaskex_tasks (id, name, type, queue, status, run_order, current_rank,"
            " last_run_id, created_at, updated_at, ended_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            tasks,
        )
        conn.executemany(
            "INSERT INTO bgtaskex_actions (id, task_id, rank, ref, status, attempts, params,"
            " initial_params, started_at, ended_at, elapsed) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            actions,
        )
        conn.executemany(
            "INSERT INTO bgtaskex_events (id, task_id, at, run_id, rank, old_status,"
            " new_status, message) VALUES (?,?,?,?,?,?,?,?)",
            events,
        )
        conn.execute("COMMIT")
    finally:
        conn.close()


# -- capturing the SQL --------------------------------------------------------------------


@dataclass
class Statement:
    phase: str
    sql: str
    params: Any
    plan: list[str] = field(default_factory=list)

    def full_scans(self) -> list[str]:
        found = []
        for line in self.plan:
            match = FULL_SCAN.match(line)
            if match and match["table"] in CHECKED_TABLES:
                found.append(line)
        return found

    def __str__(self) -> str:
        sql = " ".join(self.sql.split())
        sql = re.sub(r"SELECT .{80,}? FROM", "SELECT ... FROM", sql)
        plan = "\n".join(f"      {line}" for line in self.plan)
        return f"  [{self.phase}] {sql}\n    params {self.params!r:.120}\n{plan}"


class _RecordingConnection:
    """Stands for the probe's sqlite3 connection: records what it executes."""

    def __init__(self, conn: sqlite3.Connection, record: Callable[[str, Any], None]) -> None:
        self._conn = conn
        self._record = record

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self._record(sql, params)
        return self._conn.execute(sql, params)

    def close(self) -> None:
        self._conn.close()


class Capture:
    def __init__(self) -> None:
        self.phase = "setup"
        self.statements: list[Statement] = []

    def record(self, sql: str, params: Any) -> None:
        if sql.lstrip()[:6].upper() in ("SELECT", "UPDATE", "DELETE"):
            self.statements.append(Statement(self.phase, sql, params))

    def listen(self, store: Store) -> None:
        def on_execute(_conn: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
            if not many:
                self.record(sql, params)

        event.listen(store._engine, "before_cursor_execute", on_execute)

    def of(self, phase: str) -> list[Statement]:
        return [s for s in self.statements if s.phase == phase]


def _probe(url: str, capture: Capture) -> None:
    """The run-once probe, with retention, on a database with no task due (so that every
    one of its queries runs) but old ended tasks (so that it answers "work to do")."""
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        return _RecordingConnection(real_connect(*args, **kwargs), capture.record)

    capture.phase = "probe"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", connect)
        keep = {"finished": 30 * DAY, "failed": 90 * DAY, "cancelled": 30 * DAY}
        assert probe.sqlite_idle(url, keep) is False  # old ended tasks: retention has work


def _probe_idle(url: str, capture: Capture) -> None:
    """The probe on queues where nothing is due: its due query, then its query of when
    the next task becomes due (the min of not_before)."""
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> Any:
        return _RecordingConnection(real_connect(*args, **kwargs), capture.record)

    capture.phase = "probe (idle: next due)"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sqlite3, "connect", connect)
        assert probe.sqlite_idle_until(url, routing=Routing(queues=("none",)))[0]


def _explain(path: Path, statements: list[Statement]) -> None:
    conn = sqlite3.connect(path)
    try:
        for s in statements:
            rows = conn.execute(f"EXPLAIN QUERY PLAN {s.sql}", s.params).fetchall()
            s.plan = [row[3] for row in rows]
    finally:
        conn.close()


def _capture_all(tmp: Path, analyzed: bool) -> Capture:
    path = tmp / f"plans-{'analyzed' if analyzed else 'plain'}.db"
    url = f"sqlite:///{path}"
    now = datetime.now(UTC)
    capture = Capture()
    store = Store(url, sqlite_synchronous="OFF")
    try:
        store.ensure_schema()
        _fill(path, now, waiting=False)
        _probe(url, capture)  # no task due yet: the probe runs its retention queries too
        _fill(path, now, waiting=True)
        if analyzed:
            conn = sqlite3.connect(path)
            conn.execute("ANALYZE")
            conn.commit()
            conn.close()
        store.close()  # a new pool: its connections see the statistics of ANALYZE

        capture.phase = "setup"
        capture.listen(store)
        waiting = [t.id for t in store.list_tasks(TaskFilter(statuses=_active()), limit=1000)]
        assert len(waiting) == TASKS // WAITING_EVERY
        capture.statements = capture.of("probe")

        capture.phase = "next_task"
        store.next_task()
        store.next_task(skip_run="f" * 32, exclude=waiting[:3])
        capture.phase = "get_task"
        store.get_task(waiting[0])
        capture.phase = "apply"
        store.apply(
            Change(
                waiting[0],
                "a" * 32,
                status=TaskStatus.PAUSED,
                current_rank=1,
                actions=(ActionChange(1, status=ActionStatus.ACTIVE, progress=Progress(5, 20)),),
            )
        )
        capture.phase = "list_tasks"
        store.list_tasks(limit=50)
        capture.phase = "purge_preview"
        store.admin.purge_preview()
        capture.phase = "purge_preview --older-than"
        store.admin.purge_preview(TaskFilter(ended_before=now - timedelta(days=30)))
        capture.phase = "cancel"
        store.admin.cancel(waiting[1], executing=lambda: False)
        capture.phase = "check (stuck_tasks)"
        store.admin.stuck_tasks(now - timedelta(days=365))  # the healthy case: nothing is stuck
        capture.phase = "check (waiting_refs)"
        refs = store.admin.waiting_refs()
        store.admin.count_tasks_waiting_on(refs)
        capture.phase = "show (a page)"
        store.get_task_page(waiting[0], 50)
        store.admin.recent_events(waiting[0], 50)
        capture.phase = "page_tasks"
        for where in (
            TaskFilter(statuses=frozenset({"failed"})),
            TaskFilter(queues=frozenset({"reports"})),
            TaskFilter(types=frozenset({"interactive"}), statuses=_active()),
            TaskFilter(since=now - timedelta(days=1)),
        ):
            page = store.page_tasks(where, None, 50, 10_000)
            store.page_tasks(where, page.next_before or TASKS, 50, 10_000)
        capture.phase = "page_tasks (newest)"
        store.page_tasks(None, TASKS // 2, 50, 10_000)
        capture.phase = "stats"
        store.admin.stats()
        capture.phase = "next_due_at"
        store.next_due_at()
        store.next_due_at(Routing(queues=("reports",)))
        _probe_idle(url, capture)
        capture.phase = "run-once"
        summary = runner.run(
            store,
            Registry(()),
            RunPlan(Routing(), 60.0, LockMode.FILE),
            Settings(
                lock_file=str(tmp / f"{path.name}.lock"),
                keep_finished=89 * DAY,
                keep_failed=89 * DAY,
            ),
        )
        assert summary.finished + summary.paused >= len(waiting) - 2, summary.line()
        assert summary.purged > 0, summary.line()
    finally:
        store.close()
    _explain(path, capture.statements)
    return capture


@pytest.fixture(scope="module")
def captured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Capture]]:
    tmp = tmp_path_factory.mktemp("plans")
    yield {"plain": _capture_all(tmp, False), "analyzed": _capture_all(tmp, True)}


def _active() -> frozenset[str]:
    return frozenset(s.value for s in TaskStatus if not s.terminal)


# -- the plans ----------------------------------------------------------------------------

PHASES = (
    "probe",
    "run-once",
    "next_task",
    "get_task",
    "apply",
    "list_tasks",
    "purge_preview",
    "purge_preview --older-than",
    "cancel",
    "check (stuck_tasks)",
    "check (waiting_refs)",
    "show (a page)",
    "page_tasks",
    "stats",
    "next_due_at",
    "probe (idle: next due)",
)


@pytest.mark.parametrize(
    ("variant", "phase"),
    [
        pytest.param(variant, phase, id=f"{variant}-{phase}")
        for variant in ("plain", "analyzed")
        for phase in PHASES
    ],
)
def test_no_full_table_scan(captured: dict[str, Capture], variant: str, phase: str) -> None:
    statements = captured[variant].of(phase)
    assert statements, f"nothing captured for {phase}"
    bad = [s for s in statements if s.full_scans()]
    assert not bad, f"full table scans in {phase} ({variant}):\n" + "\n".join(map(str, bad))


def test_run_path_uses_its_indexes(captured: dict[str, Capture]) -> None:
    """The queries the design names an index for (see tables.py) use it, by name."""
    plain = captured["plain"]

    def plans(phase: str) -> str:
        return "\n".join(line for s in plain.of(phase) for line in s.plan)

    assert "ix_bgtaskex_tasks_due" in plans("next_task")
    assert "ix_bgtaskex_tasks_status_ended_at" in plans("probe")
    assert "ix_bgtaskex_tasks_due" in plans("list_tasks")
    assert re.search(r"USING INTEGER PRIMARY KEY \(rowid=\?\)", plans("get_task"))
    assert "sqlite_autoindex_bgtaskex_actions_1" in plans("get_task")  # uq(task_id, rank)
    assert re.search(r"USING INTEGER PRIMARY KEY \(rowid=\?\)", plans("apply"))


def test_not_before_is_read_from_the_due_indexes(captured: dict[str, Capture]) -> None:
    """The due query of the probe filters on not_before (delayed tasks) and stays
    index-only: not_before is the last column of the due indexes, so neither it nor the
    min of not_before (when the next task is due) reads a table row. The paused queues
    (`queue NOT IN` the pauses) keep it so: queue leads the due index of queues.

    `Store.next_due_at` over every queue (only `run-once --json` asks it, after a run
    that found nothing) reads the row of each delayed task for its queue; it keeps its
    index, and a routed one stays index-only."""
    plain = captured["plain"]
    due = [s for s in plain.of("probe") if "not_before" in s.sql]
    assert due, "the probe's due query does not filter on not_before"
    later = [s for s in plain.of("probe (idle: next due)") if "min(not_before)" in s.sql]
    assert later, "the probe does not ask when the next task is due"
    routed = [s for s in plain.of("next_due_at") if "queue IN" in s.sql]
    assert routed, "no routed next_due_at captured"
    for statement in (*due, *later, *routed):
        assert any("USING COVERING INDEX ix_bgtaskex_tasks_" in p for p in statement.plan), str(
            statement
        )
    for statement in plain.of("next_due_at"):
        assert any(
            re.search(r"USING (COVERING )?INDEX ix_bgtaskex_tasks_", p) for p in statement.plan
        ), str(statement)
    assert all("not_before" in s.sql for s in plain.of("next_task")), "next_task ignores it"


def test_run_path_limits_stop_early(captured: dict[str, Capture]) -> None:
    """A LIMIT query of the run path must not sort all its matches: its cost would grow
    with the table even though it returns a handful of rows."""
    sorted_all = [
        s
        for phase in ("probe", "run-once", "next_task", "list_tasks")
        for s in captured["plain"].of(phase)
        if " LIMIT " in s.sql and any("USE TEMP B-TREE FOR ORDER BY" in p for p in s.plan)
    ]
    assert not sorted_all, "LIMIT queries that sort every match:\n" + "\n".join(
        map(str, sorted_all)
    )


def test_task_pages_read_their_index_ranges(captured: dict[str, Capture]) -> None:
    """`page_tasks` (the web dashboard's list) reads the filter's tasks in id order from
    one range per value of the filter, named by the index made for it: no page query of
    an index-served filter sorts its matches, except that of a small time range (at most
    `pages.SMALL_TIME_RANGE` tasks, read whole from its index); the newest tasks are a
    range of the primary key (its count, of every task, reads the table in id order up to
    `count_up_to`: a scan that stops at its LIMIT, so that phase is not in PHASES).
    Statistics or not."""
    for variant in ("plain", "analyzed"):
        statements = captured[variant].of("page_tasks")
        plans = "\n".join(line for s in statements for line in s.plan)
        for index in ("type_status_id", "queue_type_status_id", "created_at_id"):
            assert f"INDEX ix_bgtaskex_tasks_{index} " in plans, (variant, index)
        sorted_all = [
            s
            for s in statements
            if " LIMIT " in s.sql
            and "created_at" not in s.sql
            and any("USE TEMP B-TREE FOR ORDER BY" in p for p in s.plan)
            and "UNION ALL" not in s.sql  # the merge of the ranges' first rows
        ]
        assert not sorted_all, "\n".join(map(str, sorted_all))
        newest = "\n".join(
            line for s in captured[variant].of("page_tasks (newest)") for line in s.plan
        )
        assert "USING INTEGER PRIMARY KEY (rowid<?)" in newest, variant


def test_every_foreign_key_is_indexed(tmp_path: Path) -> None:
    """Deleting a task (purge, ON DELETE CASCADE) looks up its children by task_id: each
    child table needs an index led by its foreign-key column, or every delete scans it."""
    store = Store(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        store.ensure_schema()
        with store._engine.connect() as conn:
            inspector = inspect(conn)
            for table in CHECKED_TABLES:
                leads = {tuple(ix["column_names"][:1]) for ix in inspector.get_indexes(table)}
                leads |= {
                    tuple(uq["column_names"][:1]) for uq in inspector.get_unique_constraints(table)
                }
                for fk in inspector.get_foreign_keys(table):
                    assert tuple(fk["constrained_columns"][:1]) in leads, (table, fk)
    finally:
        store.close()


# -- the migration against the metadata -----------------------------------------------------


def _differences(url: str) -> list[Any]:
    store = Store(url)
    try:
        store.ensure_schema()
        with store._engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "version_table": probe.VERSION_TABLE,
                },
            )
            return list(compare_metadata(context, metadata))
    finally:
        store.close()


def test_migration_matches_metadata(db_url: str) -> None:
    """Alembic's autogenerate finds nothing to change after `upgrade head`."""
    assert _differences(db_url) == []


def _sqlite_schema(path: Path) -> dict[str, Any]:
    """Columns, foreign keys and index definitions (partial WHERE included) of the tables."""
    conn = sqlite3.connect(path)
    try:
        schema: dict[str, Any] = {}
        for table in CHECKED_TABLES:
            schema[f"{table} columns"] = conn.execute(f"PRAGMA table_xinfo({table})").fetchall()
            schema[f"{table} fks"] = conn.execute(f"PRAGMA foreign_key_list({table})").fetchall()
            for _seq, name, unique, origin, partial in conn.execute(f"PRAGMA index_list({table})"):
                columns = conn.execute(f"PRAGMA index_xinfo({name})").fetchall()
                sql = conn.execute(
                    "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (name,)
                ).fetchone()[0]
                schema[f"index {name}"] = (table, unique, origin, partial, columns, sql)
        return schema
    finally:
        conn.close()


def _pg_schema(url: str) -> dict[str, Any]:
    """Columns, constraints and index definitions of the tables in the URL's schema."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = conn.execute(text("SELECT current_schema()")).scalar_one()
            columns = conn.execute(
                text(
                    "SELECT table_name, column_name, ordinal_position, data_type, "
                    "character_maximum_length, is_nullable, column_default "
                    "FROM information_schema.columns WHERE table_schema = :s "
                    "AND table_name IN ('bgtaskex_tasks', 'bgtaskex_actions', 'bgtaskex_events') "
                    "ORDER BY table_name, ordinal_position"
                ),
                {"s": current},
            ).all()
            constraints = conn.execute(
                text(
                    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                    "FROM pg_constraint WHERE connamespace = CAST(:s AS regnamespace) "
                    "AND conrelid::regclass::text "
                    "IN ('bgtaskex_tasks', 'bgtaskex_actions', 'bgtaskex_events') "
                    "ORDER BY 1, 2"
                ),
                {"s": current},
            ).all()
            indexes = conn.execute(
                text(
                    "SELECT tablename, indexname, indexdef FROM pg_indexes "
                    "WHERE schemaname = :s "
                    "AND tablename IN ('bgtaskex_tasks', 'bgtaskex_actions', 'bgtaskex_events') "
                    "ORDER BY 1, 2"
                ),
                {"s": current},
            ).all()
        strip = f"{current}."
        return {
            "columns": [tuple(r) for r in columns],
            "constraints": [tuple(str(v).replace(strip, "") for v in r) for r in constraints],
            "indexes": [tuple(str(v).replace(strip, "") for v in r) for r in indexes],
        }
    finally:
        engine.dispose()


def _mysql_schema(url: str) -> dict[str, tuple[list[str], list[str]]]:
    """SHOW CREATE TABLE of each table, without the AUTO_INCREMENT counter: its columns
    (types, collations, defaults, checks) in order, and its keys and constraints sorted
    (they come in the order they were created)."""
    engine = create_engine(url)
    try:
        schema = {}
        with engine.connect() as conn:
            for table in CHECKED_TABLES:
                ddl = conn.exec_driver_sql(f"SHOW CREATE TABLE {table}").one()[1]
                lines = [line.strip().rstrip(",") for line in ddl.splitlines()]
                columns = [line for line in lines if line.startswith("`")]
                others = [line for line in lines if not line.startswith("`")]
                schema[table] = (
                    columns,
                    sorted(re.sub(r" AUTO_INCREMENT=\d+", "", line) for line in others),
                )
        return schema
    finally:
        engine.dispose()


def test_migration_ddl_equals_create_all(db_url: str, tmp_path: Path) -> None:
    """Stricter than autogenerate, which does not compare partial-index predicates: the
    migrated database has the same columns, constraints and index definitions (WHERE
    clauses included) as `metadata.create_all` on an empty database."""
    _differences(db_url)  # upgrade head
    if db_url.startswith("sqlite"):
        reference = tmp_path / "create_all.db"
        engine = create_engine(f"sqlite:///{reference}")
        metadata.create_all(engine)
        engine.dispose()
        migrated = _sqlite_schema(Path(db_url.removeprefix("sqlite:///")))
        assert migrated == _sqlite_schema(reference)
        return
    if db_url.startswith("mysql"):
        reference_urls = _fresh_database_url(MARIADB_URL, "")
        reference_url = next(reference_urls)
        try:
            engine = create_engine(reference_url)
            metadata.create_all(engine)
            engine.dispose()
            assert _mysql_schema(db_url) == _mysql_schema(reference_url)
        finally:
            reference_urls.close()  # drops the reference database
        return
    schema = f"bgtaskex_t_{secrets.token_hex(6)}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        sep = "&" if "?" in PG_URL else "?"
        reference_url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
        engine = create_engine(reference_url)
        metadata.create_all(engine)
        engine.dispose()
        assert _pg_schema(db_url) == _pg_schema(reference_url)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
