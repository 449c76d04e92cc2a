"""The schema: its revision, creation on first use, concurrent creation, and the probe."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.exceptions import SchemaOutdated
from bgtaskex.models import NewAction, TaskType
from bgtaskex.store import Store, migrate, probe
from bgtaskex.store.probe import HEAD_REVISION, VERSION_TABLE, sqlite_idle

ROOT = Path(__file__).resolve().parents[2]
TABLES = {VERSION_TABLE, "bgtaskex_tasks", "bgtaskex_actions", "bgtaskex_events"}

# A child process: import everything, say "ready", then for each URL read on stdin create
# its schema and print the revision. Both children get each URL at the same moment, so
# they race on the schema itself, not on their imports.
CHILD = """
import sys
from bgtaskex.store import Store
print("ready", flush=True)
for line in sys.stdin:
    store = Store(line.strip())
    try:
        store.ensure_schema()
        print(store.schema_revision(), flush=True)
    finally:
        store.close()
"""


def tables(store: Store) -> set[str]:
    with store._engine.connect() as conn:
        return set(inspect(conn).get_table_names())


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_probe_head_is_the_migration_head() -> None:
    assert migrate.head_revision() == probe.HEAD_REVISION


def test_fresh_database_is_created_on_first_use(db_url: str, tmp_path: Path) -> None:
    bare = Store(db_url)
    try:
        assert bare.schema_revision() is None
    finally:
        bare.close()
    settings = Settings(database_url=db_url, lock_file=str(tmp_path / "lock"))
    with connect(settings=settings) as client:
        assert client.store.schema_revision() == HEAD_REVISION
        assert tables(client.store) >= TABLES
        tid = client.enqueue("first", ["tests.scripted:Noop"])
        assert client.get(tid).status == "created"


def test_fresh_sqlite_file_is_created(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    assert not path.exists()
    settings = Settings(database_url=sqlite_url(path), lock_file=str(tmp_path / "lock"))
    with connect(settings=settings) as client:
        assert path.is_file()
        assert client.store.schema_revision() == HEAD_REVISION


def test_ensure_schema_is_idempotent(db_url: str) -> None:
    store = Store(db_url)
    try:
        store.ensure_schema()
        tid = store.enqueue("kept", TaskType.CRON, "q", [NewAction("tests.scripted:Noop")])
        store.ensure_schema()
        store.ensure_schema(upgrade=False)
        store.upgrade()  # alembic itself finds nothing to do
        assert store.schema_revision() == HEAD_REVISION
        assert store.get_task(tid).name == "kept"
        with store._engine.connect() as conn:
            versions = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
            assert not inspect(conn).has_table("alembic_version")
        assert [v for (v,) in versions] == [HEAD_REVISION]
    finally:
        store.close()


def test_ensure_schema_without_upgrade_refuses_a_fresh_database(db_url: str) -> None:
    store = Store(db_url)
    try:
        with pytest.raises(SchemaOutdated):
            store.ensure_schema(upgrade=False)
        assert store.schema_revision() is None
    finally:
        store.close()


def test_two_processes_create_the_schema_at_once(db_url: str, tmp_path: Path) -> None:
    urls = [db_url]
    if db_url.startswith("sqlite"):  # cheap to repeat: race on a few more fresh files
        urls += [sqlite_url(tmp_path / f"race{i}.db") for i in range(4)]
    race_to_ensure_schema(urls)
    for url in urls:
        store = Store(url)
        try:
            assert store.schema_revision() == HEAD_REVISION
            assert tables(store) >= TABLES
        finally:
            store.close()


def race_to_ensure_schema(urls: list[str]) -> None:
    """Two processes call `ensure_schema` on each URL at the same moment; both must end
    with this release's revision."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(2)
    ]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for url in urls:
            for child in children:  # both get the URL as close together as possible
                assert child.stdin is not None
                child.stdin.write(url + "\n")
                child.stdin.flush()
            for child in children:
                assert child.stdout is not None
                line = child.stdout.readline().strip()
                if line != HEAD_REVISION:
                    child.kill()
                    pytest.fail(f"schema creation of {url} failed: {child.communicate()[1]}")
        results = [child.communicate(input="", timeout=60) for child in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    for child, (_out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err


def test_schema_created_between_check_and_has_table(db_url: str) -> None:
    """The race of two creators, made deterministic: a second Store (another process in
    real life) creates the schema right after this one's revision query failed, before
    the next statement of this one runs."""
    racer, other = Store(db_url), Store(db_url)
    state = {"select_failed": False, "other_done": False}

    def on_error(context: Any) -> None:
        if "alembic_version" in (context.statement or ""):
            state["select_failed"] = True

    def before(*_args: Any) -> None:
        if state["select_failed"] and not state["other_done"]:
            state["other_done"] = True
            other.ensure_schema()

    event.listen(racer._engine, "handle_error", on_error)
    event.listen(racer._engine, "before_cursor_execute", before)
    try:
        racer.ensure_schema()
        assert state["other_done"]
        assert racer.schema_revision() == HEAD_REVISION
    finally:
        racer.close()
        other.close()


# -- the stdlib probe of `run-once` --------------------------------------------------------


def test_sqlite_idle_on_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    assert sqlite_idle(sqlite_url(path))
    assert not path.exists()  # the probe creates nothing


def test_sqlite_idle_on_an_empty_database(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "empty.db")
    store = Store(url)
    store.ensure_schema()
    assert sqlite_idle(url)  # while the store is open (WAL files around)
    store.close()
    assert sqlite_idle(url)  # and after it closed


def test_sqlite_idle_false_when_a_task_is_due_true_once_ended(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "due.db")
    settings = Settings(database_url=url, lock_file=str(tmp_path / "lock"))
    with connect(settings=settings) as client:
        client.enqueue("due", ["tests.scripted:Noop"])
        assert not sqlite_idle(url)
        assert client.run_once().finished == 1
        assert sqlite_idle(url)
        client.enqueue("due again", ["tests.scripted:Noop"], type="interactive")
        assert not sqlite_idle(url)


def test_sqlite_idle_false_when_schema_not_current(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "old.db")
    store = Store(url)
    store.ensure_schema()
    with store._engine.begin() as conn:
        conn.execute(text(f"UPDATE {VERSION_TABLE} SET version_num = '0000'"))
    store.close()
    assert not sqlite_idle(url)


def test_sqlite_idle_false_on_a_database_without_schema(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE unrelated (x INTEGER)")
    conn.commit()
    conn.close()
    assert not sqlite_idle(sqlite_url(path))
    empty = tmp_path / "zero-bytes.db"
    empty.touch()
    assert not sqlite_idle(sqlite_url(empty))


def test_sqlite_idle_false_for_other_backends(pg_schema_url: str) -> None:
    assert not sqlite_idle(pg_schema_url)
    assert not sqlite_idle("sqlite://")
    assert not sqlite_idle("sqlite:///:memory:")
