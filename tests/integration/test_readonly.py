"""The commands that only read create and migrate nothing, and bgtaskex shares a database
with an application's own Alembic history.

`list`, `show`, `stats`, `check`, `rules list` and `processes`: on a database without
bgtaskex's schema (a fresh path, an empty server database, an application's database)
they answer as for an empty queue and leave no file, directory or table behind; so does
`resume` (nothing is paused there).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from bgtaskex.client import connect
from bgtaskex.config import Settings
from bgtaskex.exceptions import StorageError
from bgtaskex.store import Store, migrate
from bgtaskex.store.probe import HEAD_REVISION, VERSION_TABLE
from tests.acceptance.conftest import SCRIPTED
from tests.conftest import isolated_env
from tests.integration.test_migrations import add_task, legacy_install, versions
from tests.support import appdb
from tests.support.cli import CliResult, run_cli

#: Every read command, with what it must say on a database without the schema.
READ_COMMANDS: dict[str, tuple[list[str], int, str]] = {
    "list": (["list"], 0, "no tasks yet"),
    "list --json": (["list", "--json"], 0, "[]"),
    "show": (["show", "5"], 3, ""),
    "stats": (["stats"], 0, ""),
    "stats --json": (["stats", "--json"], 0, '"waiting": 0'),
    "check": (["check"], 0, "BGTASKEX OK - no schema yet"),
    "rules list": (["rules", "list"], 0, "no retention rules configured"),
    "processes": (["processes"], 0, ""),
}


Result = CliResult
Cli = Callable[..., Result]


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Cli:
    """`cli("list")`: the CLI in this process (cheaper than a subprocess), in the private
    HOME of `isolated_env`: no BGTASKEX_* variable, no user config, its own data directory."""
    for key in list(os.environ):
        if key.startswith("BGTASKEX_") or key == "STATE_DIRECTORY":
            monkeypatch.delenv(key)
    for key, value in isolated_env(tmp_path / "home").items():
        monkeypatch.setenv(key, value)

    def run(*args: object) -> Result:
        result = run_cli(*args)
        assert "internal error" not in result.err, (args, result.code, result.out, result.err)
        return result

    return run


def run_read_commands(cli: Cli, created_nothing: Callable[[], None], *global_args: str) -> None:
    """Every read command; after each one, `created_nothing()`; each answers as for an
    empty queue."""
    for key, (args, code, says) in READ_COMMANDS.items():
        result = cli(*global_args, *args)
        assert "Traceback" not in result.err, (key, result)
        created_nothing()
        assert result.code == code, (key, result)
        assert says in result.out, (key, result)
        if code:
            assert result.err == "bgtaskex: error: no task with id 5\n", (key, result)
        if key == "check":
            assert result.out.count("\n") == 1, result
            assert "0 task(s) waiting" in result.out, result


def tables_of(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def test_read_commands_create_no_sqlite_file_nor_directory(cli: Cli, tmp_path: Path) -> None:
    """The default database (in the private HOME's data directory) and an explicit path
    in a directory that does not exist: neither file nor directory appears."""
    data_dir = Path(os.environ["XDG_DATA_HOME"])
    missing = tmp_path / "no-such-dir" / "bgtaskex.db"

    def created_nothing() -> None:
        assert not data_dir.exists()
        assert not missing.parent.exists()

    run_read_commands(cli, created_nothing)
    run_read_commands(cli, created_nothing, "--database-url", f"sqlite:///{missing}")


def test_read_commands_create_no_table_on_an_empty_server_database(
    cli: Cli, server_url: str
) -> None:
    def created_nothing() -> None:
        assert tables_of(server_url) == set()

    run_read_commands(cli, created_nothing, "--database-url", server_url)


def test_read_commands_on_an_application_database_create_nothing(cli: Cli, app_url: str) -> None:
    """Pointed at a wrong database (an application's, with tables of its own): nothing is
    created, and an SQLite file keeps its journal mode (no WAL, no -wal file)."""
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 20)
    before, rows = tables_of(app_url), appdb.snapshot(app_url)
    path = Path(app_url.removeprefix("sqlite:///")) if app_url.startswith("sqlite") else None

    def created_nothing() -> None:
        assert tables_of(app_url) == before
        if path is not None:
            assert not Path(f"{path}-wal").exists()
            with sqlite3.connect(path) as conn:
                assert conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal"

    run_read_commands(cli, created_nothing, "--database-url", app_url)
    assert appdb.snapshot(app_url) == rows


NOT_PAUSED = "bgtaskex: error: queue 'reports' is not paused (no queue is paused)\n"


def test_resume_creates_no_sqlite_file_nor_directory(cli: Cli, tmp_path: Path) -> None:
    """`resume` on a database without the schema: not paused (exit 5), and nothing made
    (it wrote the schema, then failed)."""
    data_dir = Path(os.environ["XDG_DATA_HOME"])
    missing = tmp_path / "no-such-dir" / "bgtaskex.db"
    for args in ((), ("--database-url", f"sqlite:///{missing}")):
        result = cli(*args, "resume", "reports")
        assert (result.code, result.err) == (5, NOT_PAUSED), result
        assert not data_dir.exists() and not missing.parent.exists()


def test_resume_creates_no_table_on_an_empty_server_database(cli: Cli, server_url: str) -> None:
    result = cli("--database-url", server_url, "resume", "reports")
    assert (result.code, result.err) == (5, NOT_PAUSED), result
    assert tables_of(server_url) == set()
    paused = cli("--database-url", server_url, "pause", "reports")  # a write: it may create
    assert paused.code == 0 and "bgtaskex_queue_pauses" in tables_of(server_url), paused
    resumed = cli("--database-url", server_url, "resume", "reports")
    assert resumed.out == "queue reports resumed\n", resumed


# -- an application database that uses Alembic itself ---------------------------------------


def app_alembic_versions(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def test_every_command_on_an_application_database_with_alembic(
    cli: Cli, app_url: str, tmp_path: Path
) -> None:
    """The application's `alembic_version` holds its own revision: every command works
    (the release before failed each one with "Can't locate revision abc123"), and the
    application's version table and rows are untouched."""
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 20)
    engine = create_engine(app_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
                    "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
                )
            )
            conn.execute(text("INSERT INTO alembic_version VALUES ('abc123')"))
    finally:
        engine.dispose()
    rows = appdb.snapshot(app_url)

    def ok(*args: object) -> str:
        result = cli("--database-url", app_url, "--import", "tests.scripted", *args)
        assert result.code == 0, (args, result)
        return result.out

    assert ok("check").startswith("BGTASKEX OK - no schema yet")
    first = ok("enqueue", "first", "tests.scripted:Noop", "-q").strip()
    second = ok("enqueue", "second", "tests.scripted:Noop", "-q").strip()
    # fails in the second run (execute raises, change_params_on_error gives up); retried,
    # it finishes
    plan = {"execute": ["raise", "true"], "change": ["false"]}
    params = json.dumps({"log": str(tmp_path / "calls.jsonl"), "plan": plan})
    third = ok("enqueue", "third", f"{SCRIPTED}={params}", "-q").strip()
    assert "cancelled" in ok("cancel", second)
    assert " 1 finished" in ok("run-once")
    assert " 1 failed" in ok("run-once")
    assert "queued again" in ok("retry", third)
    assert " 1 finished" in ok("run-once")
    listed = ok("list")
    assert "first" in listed and "second" in listed
    assert "first" in ok("show", first)
    assert "finished" in ok("stats")
    assert ok("check").startswith("BGTASKEX OK - 0 task(s) waiting")
    ok("rules", "list")
    ok("processes")
    assert "(already current)" in ok("db", "upgrade")
    assert "deleted 3" in ok("purge", "--all", "--yes")
    assert app_alembic_versions(app_url) == ["abc123"]
    assert appdb.snapshot(app_url) == rows


def test_read_commands_migrate_nothing_on_an_older_schema(cli: Cli, db_url: str) -> None:
    """A schema of an earlier revision: each read command says to upgrade (exit 4, one
    line; check: a warning) and leaves the schema at its revision."""
    store = Store(db_url)
    try:
        migrate.upgrade(store._engine, "0001")
        for args in (["list"], ["show", "1"], ["stats"], ["rules", "list"]):
            result = cli("--database-url", db_url, *args)
            assert result.code == 4, (args, result)
            assert result.err.startswith("bgtaskex: error: the database schema is at revision 0001")
            assert "bgtaskex db upgrade" in result.err and result.err.count("\n") == 1, result
        check = cli("--database-url", db_url, "check")
        assert check.code == 1 and check.out.startswith("BGTASKEX WARNING - "), check
        assert store.schema_revision() == "0001"
    finally:
        store.close()


def test_db_upgrade_moves_an_earlier_install_and_says_so(cli: Cli, db_url: str) -> None:
    """An install of an earlier release (revision 0002 in `alembic_version`, older than
    this release's since 0003): the read commands say to upgrade and leave it as it is;
    `db upgrade` moves the revision, upgrades and says so; then they work."""
    store = Store(db_url)
    try:
        legacy_install(store._engine, "0002")
        add_task(store._engine, 1)
        refused = cli("--database-url", db_url, "list")
        assert refused.code == 4, refused
        assert refused.err.startswith("bgtaskex: error: the database schema is at revision 0002")
        assert versions(store._engine, "alembic_version") == ["0002"]
        upgraded = cli("--database-url", db_url, "db", "upgrade")
        assert upgraded.code == 0, upgraded
        assert upgraded.out.endswith(
            f"schema at {HEAD_REVISION} (was 0002; "
            f"its revision moved from alembic_version to {VERSION_TABLE})\n"
        ), upgraded
        listed = cli("--database-url", db_url, "list")
        assert listed.code == 0 and "task 1" in listed.out, listed
        assert versions(store._engine, "alembic_version") is None
        again = cli("--database-url", db_url, "db", "upgrade")
        assert again.out.endswith("(already current)\n"), again
    finally:
        store.close()


def test_a_readonly_client_refuses_writes_where_there_is_no_schema(tmp_path: Path) -> None:
    """`connect(readonly=True)` on a fresh path: an empty queue that refuses writes (one
    StorageError, not a task that vanishes), and still no file."""
    path = tmp_path / "none.db"
    settings = Settings(database_url=f"sqlite:///{path}", lock_file=str(tmp_path / "lock"))
    with connect(settings=settings, readonly=True) as client:
        assert client.store.no_schema
        assert client.list_tasks() == [] and client.count_tasks() == 0
        with pytest.raises(StorageError, match="readonly"):
            client.enqueue("lost", ["tests.scripted:Noop"])
    assert not path.exists()
