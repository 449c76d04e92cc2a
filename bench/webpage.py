"""A page of the web dashboard's task list on 1,000,000 tasks (`Client.page_tasks`), on
SQLite and PostgreSQL (and MariaDB with `--mariadb-url`).

The tasks are bulk-inserted (`fill`: stdlib sqlite3, PostgreSQL's COPY, executemany on
MariaDB) into a schema bgtaskex made, one action each, created over 90 days in id order:
98% ended (6% failed, 1% cancelled, the rest finished), 2% waiting (created, paused or
running) among the newest; queues default 50%, reports 30%, emails 15%, imports 5%;
5% interactive; names `report-N`, `nightly-N`, `sync-N`, `mail-N` (N < 1000). PostgreSQL
is ANALYZEd after the load, as autovacuum would.

Then, alternating, median of R runs after a warm-up: `Client.page_tasks` (the page with
its total counted up to 10,000) for page 1 and a deep page (`before_id` in the middle of
the table) of each filter in FILTERS, and `Client.list_tasks` with the same filter and
limit 50, as a ratio. Target: a page under 50 ms at 1,000,000 tasks.

The fill (`filled`) is for the web dashboard's bench to reuse: it yields the URL.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import masked, median, rotated
from .scratch import postgres_schema, with_options

TASKS_FULL, TASKS_QUICK = 1_000_000, 100_000
RUNS_FULL, RUNS_QUICK = 21, 7
TARGET_MS = 50.0
DAYS = 90
QUEUES = ("default",) * 10 + ("reports",) * 6 + ("emails",) * 3 + ("imports",)
NAMES = ("report", "nightly", "sync", "mail")
NOOP = "bgtaskex.examples:NothingToDo"
CHUNK = 20_000


def _filters(now: datetime) -> dict[str, dict[str, Any]]:
    """The filters measured: `bgtaskex list`'s, as TaskFilter fields."""
    return {
        "none": {},
        "status failed": {"statuses": frozenset({"failed"})},
        "status active": {"statuses": frozenset({"created", "paused", "running"})},
        "queue reports": {"queues": frozenset({"reports"})},
        "queue imports, failed": {
            "queues": frozenset({"imports"}),
            "statuses": frozenset({"failed"}),
        },
        "type interactive": {"types": frozenset({"interactive"})},
        "name report-1*": {"name_glob": "report-1*"},
        "name *-999 (no index)": {"name_glob": "*-999"},
        "since 1d": {"since": now - timedelta(days=1)},
        "since 30d": {"since": now - timedelta(days=30)},
        "until 80d ago": {"until": now - timedelta(days=80)},
        "failed since 7d": {"statuses": frozenset({"failed"}), "since": now - timedelta(days=7)},
    }


# -- the fill ---------------------------------------------------------------------------


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
        type_ = "interactive" if i % 20 == 0 else "cron"
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

    from . import pg_conninfo

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
    from bgtaskex.store import Store

    def schema(url: str) -> None:
        store = Store(url)
        try:
            store.ensure_schema()
        finally:
            store.close()

    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-webpage-") as tmp:
            path = Path(tmp) / "webpage.db"
            schema(f"sqlite:///{path}")
            _fill_sqlite(path, n, now)
            yield f"sqlite:///{path}"
    elif kind == "postgresql":
        with postgres_schema(server_url) as name:
            url = with_options(server_url, f"search_path={name}")
            schema(url)
            _fill_postgres(server_url, name, n, now)
            yield url
    else:
        with _mariadb_database(server_url) as url:
            schema(url)
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


# -- the measure ------------------------------------------------------------------------


def _timed(call: Callable[[], object]) -> float:
    began = time.perf_counter()
    call()
    return (time.perf_counter() - began) * 1000


def _measure(url: str, n: int, now: datetime, runs: int) -> dict[str, Any]:
    from bgtaskex.client import connect
    from bgtaskex.models import TaskFilter

    results: dict[str, Any] = {}
    with connect(url) as client:
        calls: dict[str, Callable[[], object]] = {}
        for label, fields in _filters(now).items():
            where = TaskFilter(**fields)
            calls[f"{label}|page 1"] = lambda w=where: client.page_tasks(w)
            calls[f"{label}|deep page"] = lambda w=where: client.page_tasks(w, before_id=n // 2)
            calls[f"{label}|list_tasks"] = lambda w=where: client.list_tasks(w, limit=50)
        samples: dict[str, list[float]] = {key: [] for key in calls}
        for call in calls.values():  # warm-up
            call()
        for r in range(runs):
            for key in rotated(list(calls), r):
                samples[key].append(_timed(calls[key]))
        sizes = {
            label: client.page_tasks(TaskFilter(**fields))
            for label, fields in _filters(now).items()
        }
    for label in _filters(now):
        page = sizes[label]
        found = {
            kind: median(samples[f"{label}|{kind}"])
            for kind in ("page 1", "deep page", "list_tasks")
        }
        results[label] = {
            "page_1_ms": found["page 1"],
            "deep_page_ms": found["deep page"],
            "list_tasks_ms": found["list_tasks"],
            "ratio_page_1": found["page 1"] / found["list_tasks"],
            "ratio_deep_page": found["deep page"] / found["list_tasks"],
            "total": page.total,
            "total_is_lower_bound": page.total_is_lower_bound,
        }
    return results


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    mariadb_url: str | None = None,
    tasks: int | None = None,
) -> dict[str, Any]:
    n = tasks or (TASKS_QUICK if quick else TASKS_FULL)
    runs = RUNS_QUICK if quick else RUNS_FULL
    now = datetime.now(UTC)
    kinds = [("sqlite", "")]
    if use_postgres:
        kinds.append(("postgresql", postgres_url))
    if mariadb_url:
        kinds.append(("mariadb", mariadb_url))
    results: dict[str, Any] = {}
    for kind, server in kinds:
        try:
            began = time.perf_counter()
            with filled(kind, n, now, server) as url:
                fill_s = time.perf_counter() - began
                results[kind] = {"fill_s": fill_s, "filters": _measure(url, n, now, runs)}
        except Exception as err:  # no server: skip its rows, say why
            console.print(f"[yellow]webpage: {kind} skipped ({masked(str(err))[:200]})[/yellow]")
    _print(console, results, n, runs)
    worst = max(
        (
            max(f["page_1_ms"], f["deep_page_ms"])
            for r in results.values()
            for f in r["filters"].values()
        ),
        default=0.0,
    )
    return {"tasks": n, "runs": runs, "target_ms": TARGET_MS, "worst_ms": worst, "results": results}


def _print(console: Console, results: dict[str, Any], n: int, runs: int) -> None:
    for kind, found in results.items():
        table = Table(
            title=f"{kind}: page_tasks of 50 on {n:,} tasks (filled in {found['fill_s']:.0f} s): "
            f"median of {runs}, ms, and as a ratio to list_tasks(limit=50)",
            title_justify="left",
        )
        for column in (
            "filter",
            "total",
            "page 1",
            "deep page",
            "list_tasks",
            "page 1 / list",
            "deep / list",
        ):
            table.add_column(column, justify="left" if column == "filter" else "right")
        for label, f in found["filters"].items():
            over = "+" if f["total_is_lower_bound"] else ""
            table.add_row(
                label,
                f"{f['total']:,}{over}",
                _ms(f["page_1_ms"]),
                _ms(f["deep_page_ms"]),
                f"{f['list_tasks_ms']:.2f}",
                f"{f['ratio_page_1']:.2f}",
                f"{f['ratio_deep_page']:.2f}",
            )
        console.print(table)
    console.print(f"target: a page under {TARGET_MS:g} ms (red: over)\n")


def _ms(value: float) -> str:
    text = f"{value:.2f}"
    return f"[red]{text}[/red]" if value > TARGET_MS else text
