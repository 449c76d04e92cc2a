"""The 1,000,000 tasks of the web page benchmarks (`webpage.py`): bulk-inserted (stdlib
sqlite3, PostgreSQL's COPY, executemany on MariaDB) into a schema bgtaskex made, one
action each, created over 90 days in id order: 98% ended (6% failed, 1% cancelled, the
rest finished), 2% waiting (created, paused or running) among the newest; queues default
50%, reports 30%, emails 15%, imports 5%; 5% interactive (in every queue); names
`report-N`, `nightly-N`, `sync-N`, `mail-N` (N < 1000). PostgreSQL is ANALYZEd after the
load, as autovacuum would.

`filled` makes a scratch database, dropped after. `cached` keeps the SQLite file under
bench/results/webpage-cache/ and the PostgreSQL schema `bgtaskex_bench_webpage_...`
(the fill's time in its comment) for the next run, rebuilt when the schema's source
(migrations, tables.py) or the rows change, or with `--rebuild`: only reads run on them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from . import RESULTS_DIR, ROOT, pg_conninfo
from .scratch import postgres_schema, with_options

DAYS = 90
QUEUES = ("default",) * 10 + ("reports",) * 6 + ("emails",) * 3 + ("imports",)
NAMES = ("report", "nightly", "sync", "mail")
NOOP = "bgtaskex.examples:NothingToDo"
CHUNK = 20_000
ROW_FORMAT = 1  # bump when the generated rows change: cached databases are rebuilt
CACHE_DIR = RESULTS_DIR / "webpage-cache"
CACHE_SCHEMA = "bgtaskex_bench_webpage"


def _rows(n: int, now: datetime) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(task, action) of task i, for i in 1..n, ids in creation order."""
    start = now - timedelta(days=DAYS)
    step = timedelta(days=DAYS) / n
    waiting_from = n - n // 50
    params = json.dumps({})
    for i in range(1, n + 1):
        created = start + step * i
        if i > waiting_from and i % 2 == 0:
            status = ("created", "paused", "running")[i % 3]
        elif i % 17 == 0:
            status = "failed"
        elif i % 97 == 0:
            status = "cancelled"
        else:
            status = "finished"
        type_ = "interactive" if i % 19 == 0 else "cron"  # in every queue
        ended = (
            created + timedelta(minutes=2)
            if status in ("finished", "failed", "cancelled")
            else None
        )
        order = (
            None
            if ended
            else (0 if type_ == "interactive" else 10)
            + {"running": 2, "paused": 3, "created": 4}[status]
        )
        action_status = {"finished": "done", "created": "pending"}.get(status, status)
        if status in ("paused", "running"):
            action_status = "active"
        task = {
            "id": i,
            "name": f"{NAMES[i % 4]}-{i % 1000}",
            "type": type_,
            "queue": QUEUES[i % len(QUEUES)],
            "status": status,
            "run_order": order,
            "current_rank": None if status == "created" else 1,
            "created_at": created,
            "updated_at": ended or created,
            "ended_at": ended,
        }
        action = {
            "id": i,
            "task_id": i,
            "rank": 1,
            "ref": NOOP,
            "status": action_status,
            "attempts": 0,
            "params": params,
            "initial_params": params,
            "started_at": None if status == "created" else created,
            "ended_at": ended,
            "elapsed": 0.5,
        }
        yield task, action


TASK_COLUMNS = [
    "id",
    "name",
    "type",
    "queue",
    "status",
    "run_order",
    "current_rank",
    "created_at",
    "updated_at",
    "ended_at",
]
ACTION_COLUMNS = [
    "id",
    "task_id",
    "rank",
    "ref",
    "status",
    "attempts",
    "params",
    "initial_params",
    "started_at",
    "ended_at",
    "elapsed",
]


def _naive(value: Any) -> Any:
    """A timestamp as bgtaskex stores it on SQLite and MariaDB: naive UTC."""
    if isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _chunks(n: int, now: datetime) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    tasks: list[tuple[Any, ...]] = []
    actions: list[tuple[Any, ...]] = []
    for task, action in _rows(n, now):
        tasks.append(tuple(task[c] for c in TASK_COLUMNS))
        actions.append(tuple(action[c] for c in ACTION_COLUMNS))
        if len(tasks) == CHUNK:
            yield tasks, actions
            tasks, actions = [], []
    if tasks:
        yield tasks, actions


def _insert_sql(table: str, columns: list[str], mark: str) -> str:
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"


def _fill_sqlite(path: Path, n: int, now: datetime) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        for tasks, actions in _chunks(n, now):
            conn.executemany(
                _insert_sql("bgtaskex_tasks", TASK_COLUMNS, "?"),
                [tuple(_stamp(v) for v in row) for row in tasks],
            )
            conn.executemany(
                _insert_sql("bgtaskex_actions", ACTION_COLUMNS, "?"),
                [tuple(_stamp(v) for v in row) for row in actions],
            )
        conn.execute("COMMIT")
    finally:
        conn.close()


def _stamp(value: Any) -> Any:
    """SQLite: a timestamp as bgtaskex stores it there (naive UTC text)."""
    if isinstance(value, datetime):
        return _naive(value).isoformat(sep=" ", timespec="microseconds")
    return value


def _fill_postgres(url: str, schema: str, n: int, now: datetime) -> None:
    import psycopg

    with psycopg.connect(pg_conninfo(url)) as conn:
        conn.execute(f'SET search_path = "{schema}"')
        for table, columns, index in (
            ("bgtaskex_tasks", TASK_COLUMNS, 0),
            ("bgtaskex_actions", ACTION_COLUMNS, 1),
        ):
            with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for chunk in _chunks(n, now):
                    for row in chunk[index]:
                        copy.write_row(row)
        conn.execute("SELECT setval(pg_get_serial_sequence('bgtaskex_tasks', 'id'), %s)", (n,))
        conn.execute("SELECT setval(pg_get_serial_sequence('bgtaskex_actions', 'id'), %s)", (n,))
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE bgtaskex_tasks")
        conn.execute("VACUUM ANALYZE bgtaskex_actions")


def _fill_mariadb(url: str, n: int, now: datetime) -> None:
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conn = pymysql.connect(
        host=u.host,
        port=u.port or 3306,
        user=u.username,
        password=u.password or "",
        database=u.database,
    )
    try:
        with conn.cursor() as cur:
            for tasks, actions in _chunks(n, now):
                cur.executemany(
                    _insert_sql("bgtaskex_tasks", TASK_COLUMNS, "%s"),
                    [tuple(_naive(v) for v in row) for row in tasks],
                )
                cur.executemany(
                    _insert_sql("bgtaskex_actions", ACTION_COLUMNS, "%s"),
                    [tuple(_naive(v) for v in row) for row in actions],
                )
                conn.commit()
            cur.execute("ANALYZE TABLE bgtaskex_tasks, bgtaskex_actions")
    finally:
        conn.close()


@contextlib.contextmanager
def filled(kind: str, n: int, now: datetime, server_url: str) -> Iterator[str]:
    """A scratch database of `kind` (sqlite, postgresql, mariadb) with bgtaskex's schema
    and `n` tasks (see the module's docstring); yields its URL; dropped after."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-webpage-") as tmp:
            path = Path(tmp) / "webpage.db"
            _make_schema(f"sqlite:///{path}")
            _fill_sqlite(path, n, now)
            yield f"sqlite:///{path}"
    elif kind == "postgresql":
        with postgres_schema(server_url) as name:
            url = with_options(server_url, f"search_path={name}")
            _make_schema(url)
            _fill_postgres(server_url, name, n, now)
            yield url
    else:
        with _mariadb_database(server_url) as url:
            _make_schema(url)
            _fill_mariadb(url, n, now)
            yield url


@contextlib.contextmanager
def _mariadb_database(server_url: str) -> Iterator[str]:
    """A new, empty MariaDB database on the server of `server_url`; dropped after."""
    import secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"bgtaskex_bench_{secrets.token_hex(5)}"
    admin = create_engine(server_url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        try:
            yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.begin() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    finally:
        admin.dispose()


def _schema_key(n: int) -> str:
    """What a cached fill depends on: its size, the rows' format, the schema's source."""
    digest = hashlib.sha256(f"{n}/{ROW_FORMAT}".encode())
    sources = sorted((ROOT / "bgtaskex" / "migrations" / "versions").glob("*.py"))
    for source in [*sources, ROOT / "bgtaskex" / "tables.py"]:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:10]


def _make_schema(url: str) -> None:
    from bgtaskex.store import Store

    store = Store(url)
    try:
        store.ensure_schema()
    finally:
        store.close()


@contextlib.contextmanager
def cached(
    kind: str, n: int, server_url: str, *, rebuild: bool = False
) -> Iterator[tuple[str, datetime, bool]]:
    """(url, now, reused) of the kept fill of `kind` (sqlite, postgresql; mariadb is
    filled anew each time and dropped), built when missing or stale; `now` is the time
    it was filled at, which the filters count from."""
    key = _schema_key(n)
    if kind == "mariadb":
        now = datetime.now(UTC)
        with filled(kind, n, now, server_url) as url:
            yield url, now, False
    elif kind == "sqlite":
        yield _cached_sqlite(n, key, rebuild)
    else:
        yield _cached_postgres(server_url, n, key, rebuild)


def _cached_sqlite(n: int, key: str, rebuild: bool) -> tuple[str, datetime, bool]:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"sqlite-{n}-{key}.db"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and not rebuild:
        now = datetime.fromisoformat(json.loads(meta.read_text())["now"])
        return f"sqlite:///{path}", now, True
    for old in CACHE_DIR.glob(f"sqlite-{n}-*"):
        old.unlink()
    now = datetime.now(UTC)
    building = path.with_suffix(".building")
    _make_schema(f"sqlite:///{building}")
    _fill_sqlite(building, n, now)
    building.rename(path)
    meta.write_text(json.dumps({"now": now.isoformat()}))
    return f"sqlite:///{path}", now, False


def _cached_postgres(
    server_url: str, n: int, key: str, rebuild: bool
) -> tuple[str, datetime, bool]:
    import psycopg

    name = f"{CACHE_SCHEMA}_{n}_{key}"
    url = with_options(server_url, f"search_path={name}")
    with psycopg.connect(pg_conninfo(server_url), autocommit=True) as admin:
        found = admin.execute(
            "SELECT obj_description(oid, 'pg_namespace') FROM pg_namespace WHERE nspname = %s",
            (name,),
        ).fetchone()
        if found and found[0] and not rebuild:
            return url, datetime.fromisoformat(found[0]), True
        old = admin.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s", (f"{CACHE_SCHEMA}_{n}_%",)
        ).fetchall()
        for (stale,) in old:
            admin.execute(f'DROP SCHEMA "{stale}" CASCADE')
        admin.execute(f'CREATE SCHEMA "{name}"')
        now = datetime.now(UTC)
        _make_schema(url)
        _fill_postgres(server_url, name, n, now)
        # Set last: a schema without it is a fill that did not finish.
        admin.execute(f"COMMENT ON SCHEMA \"{name}\" IS '{now.isoformat()}'")
    return url, now, False
