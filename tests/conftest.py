"""Fixtures: a fresh database per test, on SQLite, on PostgreSQL and on MariaDB.

PostgreSQL: `BGTASKEX_TEST_POSTGRES_URL` (default: the local server of this project's
machines). Each test gets its own schema, dropped afterwards. MariaDB:
`BGTASKEX_TEST_MARIADB_URL` (same default); each test gets its own database, dropped
afterwards. When no server answers, the variants of that server skip with the reason,
except under CI=true, where they fail.

`app_url`: the application database of tests/support/appdb.py, a fresh and empty one per test, on
SQLite, PostgreSQL (a new database) and MariaDB (`BGTASKEX_TEST_MARIADB_URL`, same rules).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtaskex.client import Client, connect
from bgtaskex.config import Settings
from bgtaskex.store import Store
from tests.support.cli import Bgx, isolate

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get(
    "BGTASKEX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
#: Tests retry a dead execute at the next run, as bgtaskex did before its retry backoff
#: (default 30 s): the tests of the backoff set their own delays.
TEST_RETRY_DELAY = 0.0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_pg_problem: str | bool | None = False  # False: not checked yet


def _postgres_problem() -> str | None:
    global _pg_problem
    if _pg_problem is False:
        try:
            import sqlalchemy

            engine = sqlalchemy.create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            engine.dispose()
            _pg_problem = None
        except Exception as err:  # any failure to reach it is a reason to skip
            _pg_problem = f"PostgreSQL not reachable at {PG_URL}: {type(err).__name__}"
    return _pg_problem  # type: ignore[return-value]


def require_postgres() -> None:
    problem = _postgres_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: PostgreSQL tests must run)")
        pytest.skip(problem)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI run in-process configures the "bgtaskex" and "apscheduler" loggers (a
    handler on that test's captured stderr, no propagation): undo it after each test."""
    loggers = [logging.getLogger(name) for name in ("bgtaskex", "apscheduler")]
    saved = [(lg, lg.handlers[:], lg.propagate, lg.level) for lg in loggers]
    yield
    for logger, handlers, propagate, level in saved:
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


@pytest.fixture(autouse=True)
def _restore_sys_path() -> Iterator[None]:
    """A config's `pythonpath`, read by the CLI run in-process, puts directories on
    sys.path: undo it after each test."""
    saved = sys.path[:]
    yield
    sys.path[:] = saved


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    require_postgres()
    import sqlalchemy

    schema = f"bgtaskex_t_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in PG_URL else "?"
    try:
        yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def server_url(request: pytest.FixtureRequest) -> str:
    """A database server's fresh place for bgtaskex: an empty PostgreSQL schema or an
    empty MariaDB database."""
    name = "pg_schema_url" if request.param == "postgres" else "mariadb_database_url"
    return str(request.getfixturevalue(name))


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """bgtaskex's own database, fresh per test: an SQLite file, a PostgreSQL schema, or a
    MariaDB database (see `mariadb_database_url`)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bgtaskex.db'}"
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_schema_url"))
    return str(request.getfixturevalue("mariadb_database_url"))


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url,
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted",),
        max_execution_time=30.0,
        retry_delay=TEST_RETRY_DELAY,
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with connect(settings=settings) as opened:
        yield opened


@pytest.fixture
def store(client: Client) -> Store:
    return client.store


@pytest.fixture
def calls_log(tmp_path: Path) -> str:
    return str(tmp_path / "calls.jsonl")


def isolated_env(home: Path) -> dict[str, str]:
    """Environment for `bgtaskex` subprocesses: no BGTASKEX_* variables, a private HOME
    and XDG directories (so no user config or database), the tests importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BGTASKEX_")}
    env["BGTASKEX_RETRY_DELAY"] = str(TEST_RETRY_DELAY)
    env["HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home / ".config")
    env["XDG_DATA_HOME"] = str(home / ".local" / "share")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    return isolated_env(tmp_path / "home")


@pytest.fixture
def bgx(cli_env: dict[str, str]) -> Iterator[Bgx]:
    """The real `bgtaskex` command in subprocesses, in the private HOME of `cli_env`;
    what is still running at the end of the test is killed."""
    runner = Bgx(cli_env)
    try:
        yield runner
    finally:
        runner.cleanup()


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No BGTASKEX_* variable or user config leaks into the in-process CLI."""
    isolate(monkeypatch, tmp_path)


# --- The application database of tests/support/appdb.py: a fresh, empty database per test,
# on SQLite, PostgreSQL (a new DATABASE on the server of BGTASKEX_TEST_POSTGRES_URL) and
# MariaDB (a new database on the server of BGTASKEX_TEST_MARIADB_URL). Skips when a server
# does not answer, with the reason, except under CI=true, where it fails.

MARIADB_URL = os.environ.get(
    "BGTASKEX_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
_mariadb_problem: str | bool | None = False  # False: not checked yet


def _mariadb_problem_now() -> str | None:
    global _mariadb_problem
    if _mariadb_problem is False:
        try:
            import sqlalchemy

            engine = sqlalchemy.create_engine(MARIADB_URL, connect_args={"connect_timeout": 3})
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT 1"))
            engine.dispose()
            _mariadb_problem = None
        except Exception as err:  # any failure to reach it is a reason to skip
            _mariadb_problem = f"MariaDB not reachable at {MARIADB_URL}: {type(err).__name__}"
    return _mariadb_problem  # type: ignore[return-value]


def require_mariadb() -> None:
    problem = _mariadb_problem_now()
    if problem:
        if IN_CI:
            pytest.fail(f"{problem} (CI=true: MariaDB tests must run)")
        pytest.skip(problem)


def _fresh_database_url(server_url: str, drop_suffix: str) -> Iterator[str]:
    """Create database app_<random> on the server of `server_url`, yield its URL, drop it."""
    import sqlalchemy

    name = f"app_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        url = sqlalchemy.make_url(server_url).set(database=name)
        try:
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                if conn.dialect.name in ("mysql", "mariadb"):
                    # MariaDB's DROP DATABASE waits (lock_wait_timeout: a day) for any
                    # session with an open transaction on its tables: end those first,
                    # as PostgreSQL's WITH (FORCE) does.
                    sessions = conn.exec_driver_sql(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = %s AND id <> CONNECTION_ID()",
                        (name,),
                    ).scalars()
                    for session in list(sessions):
                        with contextlib.suppress(sqlalchemy.exc.DBAPIError):  # already gone
                            conn.exec_driver_sql(f"KILL {int(session)}")
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{drop_suffix}")
    finally:
        admin.dispose()


@pytest.fixture
def pg_database_url() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped (WITH (FORCE)) after the test."""
    require_postgres()
    yield from _fresh_database_url(PG_URL, " WITH (FORCE)")


@pytest.fixture
def mariadb_database_url() -> Iterator[str]:
    """The URL of a fresh, empty MariaDB database, dropped after the test."""
    require_mariadb()
    yield from _fresh_database_url(MARIADB_URL, "")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def app_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty application database (tests/support/appdb.py) per test, on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'app.db'}"
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_database_url"))
    return str(request.getfixturevalue("mariadb_database_url"))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Fail loudly when pytest-xdist ignores the `xdist_group` marks: the torture tests
    and the InnoDB lock-wait tests rely on one worker running their group alone, and
    with pytest 9.2 `--dist loadgroup` silently stopped grouping (pytest-xdist#1386)."""
    config = session.config
    if not hasattr(config, "workerinput") or not config.getvalue("loadgroup"):
        return
    lost = [
        item.nodeid
        for item in session.items
        if item.get_closest_marker("xdist_group") and "@" not in item.nodeid
    ]
    if lost:
        raise pytest.UsageError(
            f"pytest-xdist ignored the xdist_group mark of {len(lost)} test(s), e.g. "
            f"{lost[0]}: install the pytest the test extra pins (pip install -e '.[test]')"
        )
