"""Migrations with data in place: every revision up and down keeps every row, and the
move of an install of a release that kept its revision in Alembic's `alembic_version`."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, MetaData, Table, delete, func, insert, inspect, select, text

from bgtaskex import tables as t
from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.store import Store, migrate
from bgtaskex.store.probe import HEAD_REVISION, VERSION_TABLE
from tests.integration.test_schema import race_to_ensure_schema

TABLES = ("bgtaskex_tasks", "bgtaskex_actions", "bgtaskex_events")
Snapshot = dict[str, dict[Any, dict[str, Any]]]


def revisions() -> list[str]:
    """Every revision of the migration scripts, oldest first."""
    script = ScriptDirectory.from_config(migrate.alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions()))]


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """The engine of a bgtaskex Store on a fresh database (its connect settings: on
    SQLite, foreign keys on)."""
    store = Store(db_url)
    try:
        yield store._engine
    finally:
        store.close()


def add_task(engine: Engine, n: int) -> int:
    """A task with two actions and two events, written in the columns of the first
    revision (every later one keeps them)."""
    at = datetime(2026, 1, n, 12, 0, 0, 123456, tzinfo=UTC)
    with engine.begin() as conn:
        inserted = conn.execute(
            insert(t.tasks).values(
                name=f"task {n}",
                type="cron",
                queue="q",
                status="paused",
                run_order=1,
                current_rank=2,
                created_at=at,
                updated_at=at,
            )
        ).inserted_primary_key
        assert inserted is not None
        task_id = inserted[0]
        conn.execute(
            insert(t.actions),
            [
                {
                    "task_id": task_id,
                    "rank": rank,
                    "ref": "tests.scripted:Noop",
                    "status": "finished" if rank == 1 else "pending",
                    "attempts": rank,
                    "params": {"n": n, "rank": rank},
                    "initial_params": {"n": n},
                    "elapsed": 0.5 * rank,
                }
                for rank in (1, 2)
            ],
        )
        conn.execute(
            insert(t.events),
            [{"task_id": task_id, "at": at, "message": f"event {i} of {n}"} for i in (1, 2)],
        )
    return int(task_id)


def snapshot(engine: Engine) -> Snapshot:
    """Every row of bgtaskex's tables, by table and id, in the columns they have now."""
    found: Snapshot = {}
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        for name in TABLES:
            if name not in names:
                continue
            table = Table(name, MetaData(), autoload_with=conn)
            found[name] = {row.id: dict(row._mapping) for row in conn.execute(select(table))}
    return found


def assert_kept(before: Snapshot, after: Snapshot) -> None:
    """Every row of `before` is in `after`, with the same values in the columns both have."""
    for name, rows in before.items():
        assert name in after, f"table {name} is gone"
        assert set(rows) <= set(after[name]), f"rows of {name} lost: {set(rows) - set(after[name])}"
        for row_id, row in rows.items():
            now = after[name][row_id]
            common = row.keys() & now.keys()
            assert {k: row[k] for k in common} == {k: now[k] for k in common}, (name, row_id)


def assert_foreign_keys_hold(engine: Engine, task_id: int) -> None:
    """The foreign keys are on and intact: deleting a task takes its actions and events."""
    with engine.begin() as conn:
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA foreign_key_check").all() == []
        conn.execute(delete(t.tasks).where(t.tasks.c.id == task_id))
        for child in (t.actions, t.events):
            left = select(func.count()).where(child.c.task_id == task_id)
            assert conn.execute(left).scalar() == 0, child.name


def test_every_revision_up_and_down_keeps_every_row(engine: Engine) -> None:
    """base -> each revision -> head, a task added at each step; then down one revision
    at a time: every row stays (a downgrade that drops a column keeps the rows), down to
    base; and up again. On SQLite the rebuild of bgtaskex_tasks (batch mode) must not
    cascade its DROP TABLE to the actions and events."""
    steps = revisions()
    assert steps[-1] == HEAD_REVISION
    seen: Snapshot = {}
    for n, revision in enumerate(steps, 1):
        migrate.upgrade(engine, revision)
        assert_kept(seen, snapshot(engine))
        add_task(engine, n)
        seen = snapshot(engine)
    assert all(len(seen[name]) == len(steps) * (1 if name == TABLES[0] else 2) for name in TABLES)
    for revision in reversed(steps[:-1]):
        migrate.downgrade(engine, revision)
        assert_kept(seen, snapshot(engine))
    migrate.upgrade(engine)  # and up again, with the rows of every step
    assert_kept(seen, snapshot(engine))
    assert_foreign_keys_hold(engine, min(seen["bgtaskex_tasks"]))
    migrate.downgrade(engine, "base")
    assert snapshot(engine) == {}
    migrate.upgrade(engine)
    add_task(engine, len(steps) + 1)
    assert_foreign_keys_hold(engine, max(snapshot(engine)["bgtaskex_tasks"]))


# -- installs of the releases that kept their revision in `alembic_version` --------------


def legacy_install(engine: Engine, revision: str) -> None:
    """The layout of a release before bgtaskex had its own version table: the shipped
    migrations up to `revision`, run as those releases ran them, with Alembic's default
    version table, `alembic_version`."""
    config = migrate.alembic_config()
    script = ScriptDirectory.from_config(config)
    with (
        engine.begin() as conn,
        EnvironmentContext(
            config, script, fn=lambda rev, _ctx: script._upgrade_revs(revision, rev)
        ) as env,
    ):
        env.configure(
            connection=conn,
            target_metadata=t.metadata,
            render_as_batch=conn.dialect.name == "sqlite",
        )
        with env.begin_transaction():
            env.run_migrations()


def versions(engine: Engine, table: str) -> list[str] | None:
    """The rows of version table `table`, None when there is no such table."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(table):
            return None
        return sorted(conn.execute(text(f"SELECT version_num FROM {table}")).scalars())


def add_app_version_table(engine: Engine, *revisions: str) -> None:
    """An application's Alembic history: its own `alembic_version`, as Alembic makes it."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
            )
        )
        for revision in revisions:
            conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": revision})


@pytest.mark.parametrize("legacy", ["0001", "0002"])
def test_an_install_of_an_earlier_release_moves_to_its_own_version_table(
    engine: Engine, db_url: str, tmp_path: Path, legacy: str
) -> None:
    """Made by the migrations as the earlier releases ran them (revision in
    `alembic_version`), with tasks in place: the first use moves the revision, drops the
    emptied `alembic_version`, upgrades, and every task is there and runs."""
    legacy_install(engine, legacy)
    assert versions(engine, "alembic_version") == [legacy]
    ids = [add_task(engine, n) for n in (1, 2)]
    before = snapshot(engine)
    bare = Store(db_url)
    try:
        assert bare.schema_revision() == legacy  # counted before the move, read-only
    finally:
        bare.close()
    settings = Settings(
        database_url=db_url, lock_file=str(tmp_path / "lock"), imports=("tests.scripted",)
    )
    with connect(settings=settings) as client:
        assert versions(engine, VERSION_TABLE) == [HEAD_REVISION]
        assert versions(engine, "alembic_version") is None
        assert_kept(before, snapshot(engine))
        assert [task.id for task in client.list_tasks()] == ids
        assert client.run_once().finished == 2
    with connect(settings=settings) as client:  # and the next use finds nothing to do
        assert client.store.schema_revision() == HEAD_REVISION


def test_two_processes_move_an_earlier_install_at_once(engine: Engine, db_url: str) -> None:
    legacy_install(engine, "0002")
    task_id = add_task(engine, 1)
    race_to_ensure_schema([db_url])
    assert versions(engine, VERSION_TABLE) == [HEAD_REVISION]
    assert versions(engine, "alembic_version") is None
    assert set(snapshot(engine)["bgtaskex_tasks"]) == {task_id}


@pytest.mark.parametrize("app_revisions", [("abc123",), ("0001",), ("0002", "beef")])
def test_an_application_alembic_version_is_left_alone(
    engine: Engine, db_url: str, tmp_path: Path, app_revisions: tuple[str, ...]
) -> None:
    """An application's `alembic_version` beside bgtaskex: whatever it holds (even a
    revision id that bgtaskex also uses), bgtaskex creates and upgrades its schema in its
    own version table and never reads, moves or drops the application's."""
    add_app_version_table(engine, *app_revisions)
    settings = Settings(database_url=db_url, lock_file=str(tmp_path / "lock"))
    with connect(settings=settings) as client:
        assert client.store.schema_revision() == HEAD_REVISION
        client.enqueue("mine", ["tests.scripted:Noop"])
        client.store.upgrade()
    assert versions(engine, VERSION_TABLE) == [HEAD_REVISION]
    assert versions(engine, "alembic_version") == sorted(app_revisions)


def test_task_ids_are_never_reused_once_the_newest_tasks_are_gone(
    engine: Engine, db_url: str
) -> None:
    """SQLite handed out max(id) + 1, so once the newest tasks were purged the next task
    took an id an earlier one had (`show 1` from yesterday's ticket reached today's
    task). 0004 rebuilds the table with AUTOINCREMENT there, keeping its partial
    indexes; the other backends never reused ids. Checked on a database made at 0003."""
    migrate.upgrade(engine, "0003")
    first, second = add_task(engine, 1), add_task(engine, 2)
    migrate.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(t.tasks.delete())  # the actions and events go with them (cascade)
    assert add_task(engine, 3) > second > first
    if engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE tbl_name = 'bgtaskex_tasks'"
            ).all()
        sql = dict(rows)
        assert "AUTOINCREMENT" in sql["bgtaskex_tasks"]
        assert "WHERE run_order IS NOT NULL" in sql["ix_bgtaskex_tasks_due"]
        assert "WHERE run_order IS NOT NULL" in sql["ix_bgtaskex_tasks_queue_due"]
        assert "WHERE run_order IS NULL" in sql["ix_bgtaskex_tasks_ended"]
