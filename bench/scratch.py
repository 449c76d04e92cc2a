"""The databases of the benchmarks: the backends they compare (`Backend`; `SQLITE_FULL`,
`SQLITE_NORMAL`, `POSTGRES`), whether the PostgreSQL server answers (`postgres_problem`),
and throwaway databases: a directory for SQLite files, a PostgreSQL schema or a
PostgreSQL database, each created for one measurement and dropped after it.

`with_options(url, "search_path=s", "synchronous_commit=off")` adds libpq `-c` settings to
a SQLAlchemy URL (URL-encoded), as the scratch schemas do for their search_path.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from . import pg_conninfo


@dataclass(frozen=True)
class Backend:
    key: str
    label: str
    kind: str  # "sqlite" or "postgres"
    synchronous: str = "FULL"
    history: str = "ALL"


SQLITE_FULL = Backend("sqlite-full", "SQLite FULL", "sqlite", "FULL")
SQLITE_NORMAL = Backend("sqlite-normal", "SQLite NORMAL", "sqlite", "NORMAL")
POSTGRES = Backend("postgres", "PostgreSQL", "postgres")
#: What `history = "failures"` buys (#17): the same, without the routine events.
SQLITE_FULL_FAILURES = Backend(
    "sqlite-full-failures", "SQLite FULL h=f", "sqlite", "FULL", "FAILURES"
)
POSTGRES_FAILURES = Backend("postgres-failures", "PostgreSQL h=f", "postgres", history="FAILURES")


def postgres_problem(url: str) -> str | None:
    """None when PostgreSQL answers at `url`, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    try:
        with psycopg.connect(pg_conninfo(url), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as err:
        return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err) else ''}"
    return None


def with_options(url: str, *settings: str) -> str:
    """`url` with libpq `options=-cSETTING -cSETTING...` added (URL-encoded)."""
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}options={quote(' '.join('-c' + s for s in settings))}"


@contextlib.contextmanager
def sqlite_dir(workdir: Path, prefix: str) -> Iterator[Path]:
    """A new directory under `workdir` for SQLite files (and lock files), removed after."""
    where = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=workdir))
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


@contextlib.contextmanager
def postgres_schema(pg_url: str, prefix: str = "bgtaskex_bench") -> Iterator[str]:
    """A new, empty schema on the server of `pg_url`: yields its name (the URL of the
    schema: `with_options(pg_url, f"search_path={name}")`); dropped (CASCADE) after."""
    import psycopg

    conninfo = pg_conninfo(pg_url)
    schema = f"{prefix}_{secrets.token_hex(6)}"
    with psycopg.connect(conninfo, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema
    finally:
        with psycopg.connect(conninfo, autocommit=True) as admin:
            admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextlib.contextmanager
def postgres_database(pg_url: str, prefix: str) -> Iterator[tuple[str, str]]:
    """A new, empty PostgreSQL database: yields (SQLAlchemy URL, libpq conninfo); dropped
    afterwards (WITH (FORCE): a pool left open by a peer does not keep it)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{secrets.token_hex(5)}"
    admin_info = pg_conninfo(pg_url)
    with psycopg.connect(admin_info, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url, pg_conninfo(url)
    finally:
        with psycopg.connect(admin_info, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
