"""Retention rules: rows purged per second by a rule, against one plain DELETE of the same rows.

The application database is the one of tests/support/appdb.py (tickets, ticket_comments,
ticket_links, real foreign keys), filled once per backend with `fill(n, seed=0)` into a
template: a SQLite file (switched to WAL) or a PostgreSQL database (VACUUM ANALYZE). Each
measurement runs on its own fresh copy of that template (a file copy; `CREATE DATABASE ...
TEMPLATE`), so both sides delete exactly the same rows from exactly the same data.

The rule: `created_at` older than a cut-off that falls in the middle of the widest gap
between consecutive `created_at` values near the median, so it selects about half of the
tickets, and the few seconds between writing the config and the walk fixing its cut-off
cannot change which rows go. Its children go with it (`also_delete`).

bgtaskex side, the way a user drives it: a TOML config with the rule (`database` = the
application database, `chunk_size` = 100, 1,000 or 10,000), `queue_rule(client, name,
queue="default")`, then ONE in-process `client.run_once(max_execution_time=600)`. Timed from
the queueing (which reflects the table) to the end of the run, so the walk's initial count
is part of the cost. Afterwards the task must be finished with nothing skipped, its cut-off
in the gap, and the three tables must hold exactly the expected numbers of rows.

Plain side (the physical bound): the bare driver (stdlib sqlite3 with foreign keys on, as
bgtaskex's engines have them; plain psycopg) runs, in one transaction,
`DELETE FROM ticket_comments WHERE ticket_id IN (SELECT id FROM tickets WHERE <cond>)`, the
same for ticket_links, then `DELETE FROM tickets WHERE <cond>`, and commits; each rowcount
must be the expected one.

Both sides alternate within each repetition (the order rotates between repetitions); the
report gives medians and the median of the per-pair ratios bgtaskex rows/s / plain rows/s.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import secrets
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import BenchError, masked, median, pg_conninfo, rotated

TICKETS_FULL, TICKETS_QUICK = 100_000, 20_000
REPEATS_FULL, REPEATS_QUICK = 3, 2
CHUNK_SIZES = (100, 1_000, 10_000)
SEED = 0
BUDGET = 600.0
RULE = "bench_old_tickets"
SIDES = ("plain", "bgtaskex")

CHILD_SQL = "DELETE FROM {child} WHERE ticket_id IN (SELECT id FROM tickets WHERE created_at < {p})"
PARENT_SQL = "DELETE FROM tickets WHERE created_at < {p}"


@dataclass
class Expected:
    """What the rule selects in the template, and what each table holds."""

    cutoff: datetime  # naive UTC, the middle of the gap
    gap: tuple[datetime, datetime]  # the last selected created_at, the first kept one
    tickets: int
    comments: int
    links: int
    totals: dict[str, int]

    @property
    def rows(self) -> dict[str, int]:
        return {
            "tickets": self.tickets,
            "ticket_comments": self.comments,
            "ticket_links": self.links,
        }


@dataclass
class Copy:
    """A fresh copy of the application database, and where bgtaskex keeps its own state."""

    app_url: str
    store_url: str
    lock_file: Path


@dataclass
class Backend:
    key: str
    label: str
    kind: str  # "sqlite" or "postgres"
    template: str = ""  # SQLite: the file; PostgreSQL: the database name
    template_url: str = ""
    expected: Expected | None = None
    info: dict[str, Any] = field(default_factory=dict)


# -- the application database ------------------------------------------------------------


def _count_rows(url: str) -> dict[str, int]:
    from sqlalchemy import func, select

    from tests.support.appdb import TABLES, app_engine

    engine = app_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                for t in TABLES
            }
    finally:
        engine.dispose()


def _expected(url: str) -> Expected:
    """Pick the cut-off (the middle of the widest gap between consecutive created_at among
    the middle 10% of the tickets) and count what it selects."""
    from sqlalchemy import func, select

    from tests.support.appdb import app_engine, ticket_comments, ticket_links, tickets

    engine = app_engine(url)
    try:
        with engine.connect() as conn:
            times = list(conn.scalars(select(tickets.c.created_at).order_by(tickets.c.created_at)))
            n = len(times)
            if n < 20:
                raise BenchError(f"too few tickets ({n}) to pick a cut-off")
            lo, hi = int(n * 0.45), int(n * 0.55)
            i = max(range(lo, hi), key=lambda k: times[k + 1] - times[k])
            gap = (times[i], times[i + 1])
            if gap[1] - gap[0] < timedelta(seconds=60):
                raise BenchError(f"no gap of a minute near the median of created_at: {gap}")
            cutoff = gap[0] + (gap[1] - gap[0]) / 2
            old = select(tickets.c.id).where(tickets.c.created_at < cutoff)

            def count(table: Any, *where: Any) -> int:
                query = select(func.count()).select_from(table).where(*where)
                return int(conn.execute(query).scalar_one())

            expected = Expected(
                cutoff=cutoff,
                gap=gap,
                tickets=count(tickets, tickets.c.created_at < cutoff),
                comments=count(ticket_comments, ticket_comments.c.ticket_id.in_(old)),
                links=count(ticket_links, ticket_links.c.ticket_id.in_(old)),
                totals={},
            )
    finally:
        engine.dispose()
    expected.totals = _count_rows(url)
    return expected


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def build_sqlite(backend: Backend, workdir: Path, n: int) -> None:
    from tests.support.appdb import create_app_schema, fill

    path = workdir / "template-app.db"
    url = f"sqlite:///{path}"
    create_app_schema(url)
    fill(url, n, seed=SEED)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        synchronous = conn.execute("PRAGMA synchronous").fetchone()[0]
    finally:
        conn.close()
    _fsync(path)
    backend.template, backend.template_url = str(path), url
    backend.info = {
        "journal_mode": mode,
        "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(synchronous),
        "bytes": path.stat().st_size,
    }


def build_postgres(backend: Backend, pg_url: str, n: int) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    from tests.support.appdb import create_app_schema, fill

    name = f"bgtaskex_bench_rtpl_{secrets.token_hex(5)}"
    with psycopg.connect(pg_conninfo(pg_url), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        version = int(admin.execute("SHOW server_version_num").fetchone()[0])  # type: ignore[index]
    backend.template = name
    backend.template_url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    create_app_schema(backend.template_url)
    fill(backend.template_url, n, seed=SEED)
    with psycopg.connect(pg_conninfo(backend.template_url), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size = int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])  # type: ignore[index]
    backend.info = {"server_version_num": version, "bytes": size}


def drop_template(backend: Backend, pg_url: str) -> None:
    if backend.kind != "postgres" or not backend.template:
        return
    import psycopg

    with psycopg.connect(pg_conninfo(pg_url), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {backend.template} WITH (FORCE)")


@contextlib.contextmanager
def fresh_copy(backend: Backend, workdir: Path, pg_url: str) -> Iterator[Copy]:
    if backend.kind == "sqlite":
        where = Path(tempfile.mkdtemp(prefix="retention-", dir=workdir))
        try:
            app = where / "app.db"
            shutil.copyfile(backend.template, app)
            _fsync(app)
            _fsync(where)
            yield Copy(f"sqlite:///{app}", f"sqlite:///{where / 'bgtaskex.db'}", where / "run.lock")
        finally:
            shutil.rmtree(where, ignore_errors=True)
        return

    import psycopg
    from sqlalchemy.engine import make_url

    name = f"bgtaskex_bench_r_{secrets.token_hex(5)}"
    # FILE_COPY (PostgreSQL 15+) checkpoints before and after the copy: each measurement
    # starts with the copy on disk, not with its whole contents in the WAL to flush.
    strategy = " STRATEGY FILE_COPY" if backend.info["server_version_num"] >= 150000 else ""
    with psycopg.connect(pg_conninfo(pg_url), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {backend.template}{strategy}")
    url = make_url(pg_url).set(database=name).render_as_string(hide_password=False)
    try:
        # bgtaskex keeps its own tables in the same database (one PostgreSQL for everything)
        yield Copy(url, url, workdir / f"{name}.lock")
    finally:
        with psycopg.connect(pg_conninfo(pg_url), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- the two sides ------------------------------------------------------------------------


def plain_delete(backend: Backend, copy: Copy) -> dict[str, Any]:
    """The three DELETEs in one transaction with the bare driver; connecting is untimed."""
    expected = backend.expected
    assert expected is not None
    counts: dict[str, int] = {}
    if backend.kind == "sqlite":
        from sqlalchemy.engine import make_url

        cutoff = f"{expected.cutoff:%Y-%m-%d %H:%M:%S.%f}"  # SQLAlchemy's text format
        conn = sqlite3.connect(str(make_url(copy.app_url).database), isolation_level=None)
        try:
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            gc.collect()
            began, cpu = time.perf_counter(), time.process_time()
            conn.execute("BEGIN IMMEDIATE")
            for child in ("ticket_comments", "ticket_links"):
                sql = CHILD_SQL.format(child=child, p="?")
                counts[child] = conn.execute(sql, (cutoff,)).rowcount
            counts["tickets"] = conn.execute(PARENT_SQL.format(p="?"), (cutoff,)).rowcount
            conn.execute("COMMIT")
            seconds, cpu_s = time.perf_counter() - began, time.process_time() - cpu
        finally:
            conn.close()
    else:
        import psycopg

        with psycopg.connect(pg_conninfo(copy.app_url)) as pg:
            pg.execute("SELECT 1").fetchone()
            pg.commit()
            gc.collect()
            began, cpu = time.perf_counter(), time.process_time()
            for child in ("ticket_comments", "ticket_links"):
                sql = CHILD_SQL.format(child=child, p="%s")
                counts[child] = pg.execute(sql, (expected.cutoff,)).rowcount
            counts["tickets"] = pg.execute(PARENT_SQL.format(p="%s"), (expected.cutoff,)).rowcount
            pg.commit()
            seconds, cpu_s = time.perf_counter() - began, time.process_time() - cpu
    if counts != expected.rows:
        raise BenchError(
            f"{backend.label}: plain DELETE removed {counts}, expected {expected.rows}"
        )
    return {"seconds": seconds, "cpu_s": cpu_s, "rows": expected.tickets, "deleted": counts}


def _config(copy: Copy, chunk: int, older_than: int) -> str:
    q = json.dumps  # a JSON string of ASCII text is a TOML basic string
    return f"""\
database_url = {q(copy.store_url)}
lock_file = {q(str(copy.lock_file))}

[[retention_rules]]
name = {q(RULE)}
database = {q(copy.app_url)}
table = "tickets"
date_column = "created_at"
older_than = "{older_than}s"
also_delete = [
  {{ table = "ticket_comments", column = "ticket_id" }},
  {{ table = "ticket_links", column = "ticket_id" }},
]
chunk_size = {chunk}
"""


class AppCommits:
    """COMMITs of every SQLAlchemy engine but the store's: the walk's engines on the
    application database (a class-level listener, since the action builds its own)."""

    def __init__(self, store_engine: Any) -> None:
        self.store_engine = store_engine
        self.count = 0

    def __call__(self, conn: Any) -> None:
        if conn.engine is not self.store_engine:
            self.count += 1

    def __enter__(self) -> AppCommits:
        from sqlalchemy import Engine, event

        event.listen(Engine, "commit", self)
        return self

    def __exit__(self, *_: object) -> None:
        from sqlalchemy import Engine, event

        event.remove(Engine, "commit", self)


def bgtaskex_purge(backend: Backend, copy: Copy, chunk: int, workdir: Path) -> dict[str, Any]:
    """Queue the rule and run it to the end in one in-process run; check what went."""
    from bgtaskex.builtin.retention import queue_rule
    from bgtaskex.client import connect
    from bgtaskex.config import load_settings
    from bgtaskex.models import TaskStatus

    from .throughput import Counter

    expected = backend.expected
    assert expected is not None
    older_than = round((datetime.now(UTC) - expected.cutoff.replace(tzinfo=UTC)).total_seconds())
    config = Path(tempfile.mkstemp(prefix="retention-", suffix=".toml", dir=workdir)[1])
    config.write_text(_config(copy, chunk, older_than), encoding="utf-8")
    settings = load_settings(config, environ={})  # no BGTASKEX_* from the caller's shell
    client = connect(settings=settings)  # creates the store's schema: untimed
    try:
        counter = Counter(client.store._engine)
        with AppCommits(client.store._engine) as app:
            gc.collect()
            counter.take()
            began, cpu = time.perf_counter(), time.process_time()
            task_id, queued = queue_rule(client, RULE, queue="default")
            summary = client.run_once(max_execution_time=BUDGET)
            seconds, cpu_s = time.perf_counter() - began, time.process_time() - cpu
        store = counter.take()
        task = client.get(task_id)
    finally:
        client.close()
        config.unlink(missing_ok=True)

    what = f"{backend.label}, chunk {chunk}"
    if not queued:
        raise BenchError(f"{what}: queue_rule did not queue a new walk")
    if (summary.finished, summary.failed, summary.errors) != (1, 0, 0):
        raise BenchError(f"{what}: unexpected run: {summary.line()}")
    params = task.actions[0].params
    if task.status != TaskStatus.FINISHED or params.get("skipped_count"):
        raise BenchError(f"{what}: task {task.status}, params {params}")
    cutoff = datetime.fromisoformat(params["cutoff"]).astimezone(UTC).replace(tzinfo=None)
    if not expected.gap[0] < cutoff <= expected.gap[1]:
        raise BenchError(f"{what}: the walk's cut-off {cutoff} is outside the gap {expected.gap}")
    if params["deleted"] != expected.tickets or params["total"] != expected.tickets:
        raise BenchError(
            f"{what}: deleted {params['deleted']} of {params['total']} rows, "
            f"expected {expected.tickets}"
        )
    left = _count_rows(copy.app_url)
    wanted = {name: expected.totals[name] - gone for name, gone in expected.rows.items()}
    if left != wanted:
        raise BenchError(f"{what}: rows left {left}, expected {wanted}")
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,
        "rows": expected.tickets,
        "run_elapsed_s": summary.elapsed,
        "execute_s": task.actions[0].elapsed,
        "chunks": math.ceil(expected.tickets / chunk),
        "store_write_commits": store["write_commits"],
        "store_commits": store["commits"],
        "store_statements": store["statements"],
        "app_commits": app.count,
        "walk_cutoff": cutoff.isoformat(),
    }


# -- the benchmark ----------------------------------------------------------------------


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    tickets: int | None = None,
    repeats: int | None = None,
) -> dict[str, Any]:
    from .scratch import postgres_problem

    n = tickets or (TICKETS_QUICK if quick else TICKETS_FULL)
    repeats = repeats or (REPEATS_QUICK if quick else REPEATS_FULL)
    backends = [Backend("sqlite", "SQLite", "sqlite")]
    skipped = None
    if use_postgres:
        skipped = postgres_problem(postgres_url)
        if skipped is None:
            backends.append(Backend("postgres", "PostgreSQL", "postgres"))
        else:
            console.print(
                f"[yellow]PostgreSQL skipped ({masked(postgres_url)}): {skipped}[/yellow]"
            )
    else:
        skipped = "disabled by --no-postgres"

    results: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-retention-") as tmp:
        workdir = Path(tmp)
        try:
            for backend in backends:
                t0 = time.perf_counter()
                if backend.kind == "sqlite":
                    build_sqlite(backend, workdir, n)
                else:
                    build_postgres(backend, postgres_url, n)
                backend.expected = e = _expected(backend.template_url)
                console.print(
                    f"[dim]{backend.label}: template of {n:,} tickets, "
                    f"{e.totals['ticket_comments']:,} comments, {e.totals['ticket_links']:,} "
                    f"links built in {time.perf_counter() - t0:.1f}s; the rule selects "
                    f"{e.tickets:,} tickets (+{e.comments + e.links:,} child rows), cut-off "
                    f"{e.cutoff:%Y-%m-%d %H:%M:%S} in a gap of {e.gap[1] - e.gap[0]}[/dim]"
                )
            for r in range(repeats):
                for backend in rotated(backends, r):
                    for chunk in rotated(CHUNK_SIZES, r):
                        pair: dict[str, Any] = {}
                        for side in rotated(SIDES, r):
                            with fresh_copy(backend, workdir, postgres_url) as copy:
                                if side == "plain":
                                    pair[side] = plain_delete(backend, copy)
                                else:
                                    pair[side] = bgtaskex_purge(backend, copy, chunk, workdir)
                        one = {
                            "round": r,
                            "backend": backend.key,
                            "chunk_size": chunk,
                            "order": list(rotated(SIDES, r)),
                            "plain": pair["plain"],
                            "bgtaskex": pair["bgtaskex"],
                            "ratio": pair["plain"]["seconds"] / pair["bgtaskex"]["seconds"],
                        }
                        results.append(one)
                        b, p = pair["bgtaskex"], pair["plain"]
                        console.print(
                            f"[dim]round {r + 1}/{repeats} {backend.label:<10} chunk "
                            f"{chunk:>6}: bgtaskex {b['seconds']:.2f}s "
                            f"({b['rows'] / b['seconds']:,.0f} rows/s), plain "
                            f"{p['seconds']:.2f}s, ratio {one['ratio']:.2f}[/dim]"
                        )
        finally:
            for backend in backends:
                drop_template(backend, postgres_url)
    summary = _summarise(results, backends)
    _print_table(console, summary, n, repeats)
    elapsed = time.monotonic() - began
    console.print(f"[dim]retention benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "tickets": n,
        "repeats": repeats,
        "chunk_sizes": list(CHUNK_SIZES),
        "budget_s": BUDGET,
        "postgres_url": masked(postgres_url),
        "postgres_skipped": skipped,
        "databases": {
            b.key: {
                "info": b.info,
                "cutoff": b.expected.cutoff.isoformat() if b.expected else None,
                "gap": [t.isoformat() for t in b.expected.gap] if b.expected else None,
                "selected": b.expected.rows if b.expected else None,
                "totals": b.expected.totals if b.expected else None,
            }
            for b in backends
        },
        "elapsed_s": elapsed,
        "summary": summary,
        "measurements": results,
    }


def _summarise(results: list[dict[str, Any]], backends: list[Backend]) -> list[dict[str, Any]]:
    summary = []
    for backend in backends:
        assert backend.expected is not None
        for chunk in CHUNK_SIZES:
            ms = [m for m in results if m["backend"] == backend.key and m["chunk_size"] == chunk]
            if not ms:
                continue
            rows = backend.expected.tickets
            seconds = median([m["bgtaskex"]["seconds"] for m in ms])
            plain_s = median([m["plain"]["seconds"] for m in ms])
            chunks = ms[0]["bgtaskex"]["chunks"]

            def med(key: str, ms: list[dict[str, Any]] = ms) -> float:
                return median([m["bgtaskex"][key] for m in ms])

            summary.append(
                {
                    "backend": backend.key,
                    "label": backend.label,
                    "chunk_size": chunk,
                    "rows": rows,
                    "child_rows": backend.expected.comments + backend.expected.links,
                    "seconds": seconds,
                    "rows_per_s": median([rows / m["bgtaskex"]["seconds"] for m in ms]),
                    "execute_s": med("execute_s"),
                    "cpu_share": median(
                        [m["bgtaskex"]["cpu_s"] / m["bgtaskex"]["seconds"] for m in ms]
                    ),
                    "plain_seconds": plain_s,
                    "plain_rows_per_s": median([rows / m["plain"]["seconds"] for m in ms]),
                    "ratio": median([m["ratio"] for m in ms]),
                    "chunks": chunks,
                    "store_write_commits": med("store_write_commits"),
                    "store_commits": med("store_commits"),
                    "app_commits": med("app_commits"),
                }
            )
    return summary


def _print_table(console: Console, summary: list[dict[str, Any]], n: int, repeats: int) -> None:
    table = Table(
        title=f"Retention rule vs one plain DELETE of the same rows, {n:,} tickets "
        f"(median of {repeats} alternating pairs; ratio = median of per-pair bgtaskex / plain "
        "rows/s)",
        title_justify="left",
    )
    columns = [
        "backend",
        "chunk size",
        "rows (+children)",
        "seconds",
        "rows/s",
        "plain DELETE s",
        "plain DELETE rows/s",
        "ratio",
        "chunks",
        "store write commits (/chunk)",
        "app commits (/chunk)",
        "client cpu",
    ]
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in summary:
        chunks = row["chunks"]
        table.add_row(
            row["label"],
            f"{row['chunk_size']:,}",
            f"{row['rows']:,} (+{row['child_rows']:,})",
            f"{row['seconds']:.2f}",
            f"{row['rows_per_s']:,.0f}",
            f"{row['plain_seconds']:.2f}",
            f"{row['plain_rows_per_s']:,.0f}",
            f"{row['ratio']:.2f}",
            f"{chunks:,}",
            f"{row['store_write_commits']:.0f} ({row['store_write_commits'] / chunks:.2f})",
            f"{row['app_commits']:.0f} ({row['app_commits'] / chunks:.2f})",
            f"{row['cpu_share']:.0%}",
        )
    console.print(table)
