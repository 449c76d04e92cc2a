"""Throughput of one long run over many no-op tasks, against the disk's commit rate.

For each backend (SQLite with synchronous=FULL, SQLite with NORMAL, PostgreSQL) and each
workload (N tasks of 1 action; M tasks of 10 actions), on a fresh database: enqueue the
tasks through the Python client (timed on its own), then drain them with ONE in-process run
with a one-hour budget (`Client.run_once()`, the same run as `bgtaskex run-once`).

The physical bound is measured next to it, before the enqueue and before and after the
drain: single-row UPDATE + COMMIT per second with the bare driver (stdlib sqlite3 on a WAL
file at the same synchronous setting, in the same directory; plain psycopg on one
connection, in the same PostgreSQL schema). bgtaskex's best possible rate is that commit
rate divided by the commits bgtaskex makes per task; the report gives the throughput as a
percentage of it.

Commits are counted with SQLAlchemy events on the store's engine. "write commits" are those
of transactions that ran an INSERT/UPDATE/DELETE: the ones that cost a WAL flush. The
others are the COMMITs that end read-only transactions (cheap, but still round trips on
PostgreSQL), shown in "all commits".
"""

from __future__ import annotations

import contextlib
import cProfile
import gc
import io
import pstats
import sqlite3
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bgtaskex import Action

from . import BenchError, masked, median, pg_conninfo, rotated
from .scratch import (
    POSTGRES,
    POSTGRES_FAILURES,
    SQLITE_FULL,
    SQLITE_FULL_FAILURES,
    SQLITE_NORMAL,
    Backend,
    postgres_problem,
    postgres_schema,
    sqlite_dir,
    with_options,
)

TASKS_FULL, TASKS_QUICK = 10_000, 2_000
MULTI_FULL, MULTI_QUICK = 1_000, 200
MULTI_ACTIONS = 10
RAW_SECONDS_FULL, RAW_SECONDS_QUICK = 1.0, 0.5
PROFILE_TASKS = 1_000


class Noop(Action):
    """Does nothing and is done at once. It keeps the inherited `init_params`, so the runner
    skips the `starting` status write: the cheapest action bgtaskex can run."""

    description = "benchmark no-op"

    def execute(self, deadline: float) -> bool:
        return True


NOOP_REF = f"{Noop.__module__}:{Noop.__qualname__}"


@dataclass(frozen=True)
class Workload:
    key: str
    tasks: int
    actions: int

    @property
    def label(self) -> str:
        return f"{self.tasks} x {self.actions}"


@dataclass
class Target:
    """A fresh, empty database for one measurement, and its bare-driver commit meter."""

    url: str
    lock_file: Path
    raw_commits_per_s: Callable[[float], float]


# -- counting commits -------------------------------------------------------------------


class Counter:
    """Commits, statements and pool pre-pings of one SQLAlchemy engine."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.commits = self.write_commits = self.statements = self.pings = 0
        self._wrote = False
        event.listen(engine, "before_cursor_execute", self._on_execute)
        event.listen(engine, "commit", self._on_commit)
        event.listen(engine, "rollback", self._on_rollback)
        dialect = engine.dialect
        do_ping = dialect.do_ping

        def counted_ping(dbapi_connection: Any) -> bool:
            self.pings += 1
            return bool(do_ping(dbapi_connection))

        dialect.do_ping = counted_ping

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        self.statements += 1
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            self._wrote = True

    def _on_commit(self, conn: Any) -> None:
        self.commits += 1
        if self._wrote:
            self.write_commits += 1
        self._wrote = False

    def _on_rollback(self, conn: Any) -> None:
        self._wrote = False

    def take(self) -> dict[str, int]:
        """The counts since the last take()."""
        counts = {
            "commits": self.commits,
            "write_commits": self.write_commits,
            "statements": self.statements,
            "pings": self.pings,
        }
        self.commits = self.write_commits = self.statements = self.pings = 0
        return counts


# -- the physical bound -----------------------------------------------------------------


def raw_sqlite(path: Path, synchronous: str, seconds: float) -> float:
    """Single-row UPDATE + COMMIT per second, stdlib sqlite3, WAL, `synchronous`."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("CREATE TABLE IF NOT EXISTS raw (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        conn.execute("INSERT OR IGNORE INTO raw VALUES (1, 0)")
        n = 0
        began = time.perf_counter()
        end = began + seconds
        while True:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE raw SET v = ? WHERE id = 1", (n,))
            conn.execute("COMMIT")
            n += 1
            now = time.perf_counter()
            if now >= end:
                return n / (now - began)
    finally:
        conn.close()


def raw_postgres(conninfo: str, schema: str, seconds: float) -> float:
    """Single-row UPDATE + COMMIT per second, plain psycopg, one connection."""
    import psycopg

    with psycopg.connect(conninfo) as conn:
        table = f'"{schema}".raw'
        conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (id int PRIMARY KEY, v bigint NOT NULL)")
        conn.execute(f"INSERT INTO {table} VALUES (1, 0) ON CONFLICT DO NOTHING")
        conn.commit()
        n = 0
        began = time.perf_counter()
        end = began + seconds
        while True:
            conn.execute(f"UPDATE {table} SET v = %s WHERE id = 1", (n,))
            conn.commit()
            n += 1
            now = time.perf_counter()
            if now >= end:
                return n / (now - began)


@contextlib.contextmanager
def fresh_database(backend: Backend, workdir: Path, pg_url: str) -> Iterator[Target]:
    if backend.kind == "sqlite":
        with sqlite_dir(workdir, backend.key) as where:
            yield Target(
                url=f"sqlite:///{where / 'bgtaskex.db'}",
                lock_file=where / "run.lock",
                raw_commits_per_s=lambda s: raw_sqlite(where / "raw.db", backend.synchronous, s),
            )
        return
    conninfo = pg_conninfo(pg_url)
    with postgres_schema(pg_url) as schema:
        yield Target(
            url=with_options(pg_url, f"search_path={schema}"),
            lock_file=workdir / f"{schema}.lock",
            raw_commits_per_s=lambda s: raw_postgres(conninfo, schema, s),
        )


# -- one measurement --------------------------------------------------------------------


def _settings(backend: Backend, target: Target) -> Any:
    from bgtaskex.config import Settings

    return Settings(
        database_url=target.url,
        lock_file=str(target.lock_file),
        max_execution_time=3600.0,
        sqlite_synchronous=backend.synchronous,
        history=backend.history,
    )


def measure(
    backend: Backend, workload: Workload, workdir: Path, pg_url: str, raw_seconds: float
) -> dict[str, Any]:
    from bgtaskex.client import connect

    with fresh_database(backend, workdir, pg_url) as target:
        client = connect(settings=_settings(backend, target))
        try:
            counter = Counter(client.store._engine)
            refs = [NOOP_REF] * workload.actions
            first_raw = target.raw_commits_per_s(raw_seconds)
            gc.collect()
            began, cpu = time.perf_counter(), time.process_time()
            for i in range(workload.tasks):
                client.enqueue(f"bench-{i}", refs)
            enqueue_s, enqueue_cpu_s = time.perf_counter() - began, time.process_time() - cpu
            enqueue_counts = counter.take()

            raw_samples = [first_raw, target.raw_commits_per_s(raw_seconds)]
            gc.collect()
            counter.take()
            began, cpu = time.perf_counter(), time.process_time()
            summary = client.run_once()
            drain_s, drain_cpu_s = time.perf_counter() - began, time.process_time() - cpu
            counts = counter.take()
            raw_samples.append(target.raw_commits_per_s(raw_seconds))
        finally:
            client.close()

    n, k = workload.tasks, workload.actions
    if (summary.finished, summary.actions, summary.failed, summary.errors) != (n, n * k, 0, 0):
        raise BenchError(f"{backend.label} {workload.label}: unexpected run: {summary.line()}")
    return {
        "backend": backend.key,
        "workload": workload.key,
        "tasks": n,
        "actions_per_task": k,
        "enqueue_s": enqueue_s,
        "enqueue_tasks_per_s": n / enqueue_s,
        "enqueue_commits_per_task": enqueue_counts["commits"] / n,
        "enqueue_statements_per_task": enqueue_counts["statements"] / n,
        "enqueue_pings_per_task": enqueue_counts["pings"] / n,
        "enqueue_cpu_s": enqueue_cpu_s,
        "drain_s": drain_s,
        "drain_cpu_s": drain_cpu_s,
        "cpu_ms_per_action": drain_cpu_s * 1000 / (n * k),
        "cpu_share": drain_cpu_s / drain_s,
        "run_elapsed_s": summary.elapsed,
        "tasks_per_s": n / drain_s,
        "actions_per_s": n * k / drain_s,
        **{f"run_{key}": value for key, value in counts.items()},
        "write_commits_per_task": counts["write_commits"] / n,
        "write_commits_per_action": counts["write_commits"] / (n * k),
        "commits_per_action": counts["commits"] / (n * k),
        "statements_per_action": counts["statements"] / (n * k),
        "pings_per_task": counts["pings"] / n,
        "raw_commits_per_s": raw_samples,
    }


# -- profile ----------------------------------------------------------------------------


def _code(func: Any) -> tuple[str, str, int]:
    """The matcher of exactly one Python function (see _cumulative)."""
    code = func.__code__
    return code.co_filename, code.co_name, code.co_firstlineno


Matcher = tuple[str, str] | tuple[str, str, int]


def _breakdown() -> list[tuple[str, list[Matcher]]]:
    """(label, matchers): a matcher is (file or path ending, function name[, first line]),
    or ("~", name) for a C function. Indented rows are parts of the row above."""
    from bgtaskex.run.hooks import Hooks
    from bgtaskex.run.worker import Worker
    from bgtaskex.store import Store

    return [
        ("Worker.work: the whole drain", [_code(Worker.work)]),
        ("  Store.next_task (read transaction)", [_code(Store.next_task)]),
        ("  Store.apply (write transaction)", [_code(Store.apply)]),
        ("  Hooks.call (the action's execute)", [_code(Hooks.call)]),
        (
            "Connection.execute (SQLAlchemy, all statements)",
            [("sqlalchemy/engine/base.py", "execute")],
        ),
        (
            "  compile / statement cache lookup",
            [("sqlalchemy/sql/elements.py", "_compile_w_cache")],
        ),
        ("    cache key generation", [("sqlalchemy/sql/cache_key.py", "_generate_cache_key")]),
        ("  DBAPI cursor.execute", [("sqlalchemy/engine/default.py", "do_execute")]),
        (
            "building statements (.values/.where)",
            [
                ("sqlalchemy/sql/dml.py", "values"),
                ("sqlalchemy/sql/dml.py", "where"),
                ("sqlalchemy/sql/selectable.py", "where"),
            ],
        ),
        (
            "BEGIN / BEGIN IMMEDIATE (bgtaskex begin listener)",
            [("bgtaskex/store/engine.py", "_on_begin")],
        ),
        ("COMMIT (Connection._commit_impl)", [("sqlalchemy/engine/base.py", "_commit_impl")]),
        (
            "  sqlite3 commit (C: WAL write + fsync)",
            [("~", "<method 'commit' of 'sqlite3.Connection' objects>")],
        ),
        ("  psycopg commit", [("psycopg/connection.py", "commit")]),
        ("pool checkout (incl. pre-ping)", [("sqlalchemy/pool/base.py", "_checkout")]),
        (
            "  pre-ping (dialect.do_ping)",
            [
                ("sqlalchemy/dialects/postgresql/_psycopg_common.py", "do_ping"),
                ("sqlalchemy/engine/default.py", "do_ping"),
            ],
        ),
        ("pool checkin (incl. reset rollback)", [("sqlalchemy/pool/base.py", "_checkin")]),
        ("psycopg waiting on the server", [("psycopg/connection.py", "wait")]),
    ]


def _cumulative(entries: dict[Any, Any], matchers: list[Matcher]) -> tuple[float, int]:
    """Cumulative seconds and calls of the functions that `matchers` name."""
    total, calls = 0.0, 0
    for (filename, line, func), (_cc, nc, _tt, ct, _callers) in entries.items():
        for where, name, *first in matchers:
            if func != name or not (filename == where or filename.endswith(where)):
                continue
            if not first or first[0] == line:
                total += ct
                calls += nc
    return total, calls


def profile(
    console: Console, backend: Backend, workdir: Path, pg_url: str, tasks: int
) -> dict[str, Any]:
    """cProfile one drain of `tasks` single-action tasks; µs per task in the main parts of
    a run. cProfile inflates pure-Python code, so read the shares more than the µs."""
    from bgtaskex.client import connect

    with fresh_database(backend, workdir, pg_url) as target:
        client = connect(settings=_settings(backend, target))
        try:
            for i in range(tasks):
                client.enqueue(f"bench-{i}", [NOOP_REF])
            profiler = cProfile.Profile()
            gc.collect()
            profiler.enable()
            summary = client.run_once()
            profiler.disable()
        finally:
            client.close()
    stats = pstats.Stats(profiler, stream=io.StringIO())
    entries: dict[tuple[str, int, str], Any] = stats.stats  # type: ignore[attr-defined]
    breakdown = _breakdown()
    whole = _cumulative(entries, breakdown[0][1])[0] or 1e-9

    table = Table(
        title=f"Profile of one drain, {backend.label}, {tasks} x 1 under cProfile "
        f"({summary.elapsed:.1f}s profiled)",
        title_justify="left",
    )
    for column in ("part", "calls/task", "µs/task", "share of run"):
        table.add_column(column, justify="left" if column == "part" else "right")
    rows = []
    for label, matchers in breakdown:
        seconds, calls = _cumulative(entries, matchers)
        if not calls:
            continue
        rows.append(
            {
                "part": label.strip(),
                "calls_per_task": calls / tasks,
                "us_per_task": seconds / tasks * 1e6,
                "share": seconds / whole,
            }
        )
        per_task = f"{calls / tasks:.1f}" if calls >= tasks / 10 else f"{calls} in all"
        table.add_row(label, per_task, f"{seconds / tasks * 1e6:.0f}", f"{seconds / whole:.0%}")
    console.print(table)

    top = Table(title=f"Profile, {backend.label}: top functions by own time", title_justify="left")
    for column in ("function", "calls/task", "own µs/task", "cum µs/task"):
        top.add_column(column, justify="left" if column == "function" else "right")
    ranked = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:12]
    top_rows = []
    for (filename, line, func), (_cc, nc, tt, ct, _callers) in ranked:
        where = func if filename == "~" else f"{Path(filename).name}:{line} {func}"
        top_rows.append(
            {
                "function": where,
                "calls_per_task": nc / tasks,
                "own_us_per_task": tt / tasks * 1e6,
                "cum_us_per_task": ct / tasks * 1e6,
            }
        )
        top.add_row(
            where, f"{nc / tasks:.1f}", f"{tt / tasks * 1e6:.0f}", f"{ct / tasks * 1e6:.0f}"
        )
    console.print(top)
    return {"backend": backend.key, "tasks": tasks, "breakdown": rows, "top_own_time": top_rows}


# -- the benchmark ----------------------------------------------------------------------


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    tasks: int | None = None,
    multi_tasks: int | None = None,
    rounds: int = 1,
    with_profile: bool = False,
) -> dict[str, Any]:
    workloads = [
        Workload("single", tasks or (TASKS_QUICK if quick else TASKS_FULL), 1),
        Workload("multi", multi_tasks or (MULTI_QUICK if quick else MULTI_FULL), MULTI_ACTIONS),
    ]
    raw_seconds = RAW_SECONDS_QUICK if quick else RAW_SECONDS_FULL
    backends = [SQLITE_FULL, SQLITE_NORMAL, SQLITE_FULL_FAILURES]
    skipped = None
    if use_postgres:
        skipped = postgres_problem(postgres_url)
        if skipped is None:
            backends += [POSTGRES, POSTGRES_FAILURES]
        else:
            console.print(
                f"[yellow]PostgreSQL skipped ({masked(postgres_url)}): {skipped}[/yellow]"
            )
    else:
        skipped = "disabled by --no-postgres"

    results: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-throughput-") as tmp:
        workdir = Path(tmp)
        for r in range(rounds):
            for workload in workloads:
                for backend in rotated(backends, r):
                    one = measure(backend, workload, workdir, postgres_url, raw_seconds)
                    one["round"] = r
                    results.append(one)
                    console.print(
                        f"[dim]round {r + 1}/{rounds} {backend.label:<13} {workload.label:>10}: "
                        f"enqueue {one['enqueue_s']:.1f}s, drain {one['drain_s']:.1f}s "
                        f"({one['tasks_per_s']:.0f} tasks/s)[/dim]"
                    )
        summary = _summarise(results, backends, workloads)
        _print_tables(console, summary, rounds)
        profiled = []
        if with_profile:
            size = min(PROFILE_TASKS, workloads[0].tasks)
            for backend in backends:
                if backend.key != "sqlite-normal":
                    profiled.append(profile(console, backend, workdir, postgres_url, size))
    elapsed = time.monotonic() - began
    console.print(f"[dim]throughput benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "rounds": rounds,
        "raw_seconds_per_sample": raw_seconds,
        "postgres_url": masked(postgres_url),
        "postgres_skipped": skipped,
        "elapsed_s": elapsed,
        "summary": summary,
        "measurements": results,
        "profile": profiled,
    }


def _summarise(
    results: list[dict[str, Any]], backends: list[Backend], workloads: list[Workload]
) -> list[dict[str, Any]]:
    for m in results:  # the bound next to each drain: before the enqueue, before and after it
        m["raw_commits_per_s_adjacent"] = median(m["raw_commits_per_s"])
        m["bound_tasks_per_s"] = m["raw_commits_per_s_adjacent"] / m["write_commits_per_task"]
        m["percent_of_bound"] = 100 * m["tasks_per_s"] / m["bound_tasks_per_s"]
    reference = {  # SQLite FULL per round and workload, for the ratios
        (m["round"], m["workload"]): m["tasks_per_s"]
        for m in results
        if m["backend"] == "sqlite-full"
    }
    summary = []
    for workload in workloads:
        for backend in backends:
            ms = [
                m for m in results if m["backend"] == backend.key and m["workload"] == workload.key
            ]

            def med(key: str, ms: list[dict[str, Any]] = ms) -> float:
                return median([m[key] for m in ms])

            tasks_per_s = med("tasks_per_s")
            summary.append(
                {
                    "backend": backend.key,
                    "label": backend.label,
                    "workload": workload.key,
                    "tasks": workload.tasks,
                    "actions_per_task": workload.actions,
                    "enqueue_tasks_per_s": med("enqueue_tasks_per_s"),
                    "enqueue_commits_per_task": med("enqueue_commits_per_task"),
                    "enqueue_statements_per_task": med("enqueue_statements_per_task"),
                    "enqueue_pings_per_task": med("enqueue_pings_per_task"),
                    "tasks_per_s": tasks_per_s,
                    "actions_per_s": med("actions_per_s"),
                    "ms_per_action": 1000 / med("actions_per_s"),
                    "cpu_ms_per_action": med("cpu_ms_per_action"),
                    "cpu_share": med("cpu_share"),
                    "write_commits_per_action": med("write_commits_per_action"),
                    "commits_per_action": med("commits_per_action"),
                    "statements_per_action": med("statements_per_action"),
                    "pings_per_task": med("pings_per_task"),
                    "raw_commits_per_s": med("raw_commits_per_s_adjacent"),
                    "bound_tasks_per_s": med("bound_tasks_per_s"),
                    "percent_of_bound": med("percent_of_bound"),
                    "ratio_to_sqlite_full": median(
                        [m["tasks_per_s"] / reference[(m["round"], m["workload"])] for m in ms]
                    ),
                }
            )
    return summary


def _table(title: str, columns: list[str]) -> Table:
    table = Table(title=title, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    return table


def _print_tables(console: Console, summary: list[dict[str, Any]], rounds: int) -> None:
    what = "median of " + (f"{rounds} rounds" if rounds > 1 else "1 round")
    enqueue = _table(
        f"Enqueue through the Python client, one task per call ({what})",
        [
            "backend",
            "tasks x actions",
            "tasks/s",
            "ms/task",
            "commits/task",
            "stmts/task",
            "pings/task",
        ],
    )
    for row in summary:
        enqueue.add_row(
            row["label"],
            f"{row['tasks']} x {row['actions_per_task']}",
            f"{row['enqueue_tasks_per_s']:.0f}",
            f"{1000 / row['enqueue_tasks_per_s']:.2f}",
            f"{row['enqueue_commits_per_task']:.2f}",
            f"{row['enqueue_statements_per_task']:.1f}",
            f"{row['enqueue_pings_per_task']:.2f}",
        )
    console.print(enqueue)

    drain = _table(
        f"Drain by ONE in-process run, budget 3600s ({what})",
        [
            "backend",
            "tasks x actions",
            "tasks/s",
            "actions/s",
            "ms/action",
            "client cpu ms/action (% of wall)",
            "tasks/s x SQLite FULL",
        ],
    )
    for row in summary:
        drain.add_row(
            row["label"],
            f"{row['tasks']} x {row['actions_per_task']}",
            f"{row['tasks_per_s']:.0f}",
            f"{row['actions_per_s']:.0f}",
            f"{row['ms_per_action']:.2f}",
            f"{row['cpu_ms_per_action']:.2f} ({row['cpu_share']:.0%})",
            f"{row['ratio_to_sqlite_full']:.2f}",
        )
    console.print(drain)

    bound = _table(
        "Drain against the physical bound = raw UPDATE+COMMIT/s (median of samples before the "
        "enqueue, before and after the drain) / bgtaskex write commits per task",
        [
            "backend",
            "tasks x actions",
            "write commits/action",
            "all commits/action",
            "stmts/action",
            "pings/task",
            "raw commits/s",
            "bound tasks/s",
            "tasks/s",
            "% of bound",
        ],
    )
    for row in summary:
        bound.add_row(
            row["label"],
            f"{row['tasks']} x {row['actions_per_task']}",
            f"{row['write_commits_per_action']:.2f}",
            f"{row['commits_per_action']:.2f}",
            f"{row['statements_per_action']:.1f}",
            f"{row['pings_per_task']:.2f}",
            f"{row['raw_commits_per_s']:.0f}",
            f"{row['bound_tasks_per_s']:.0f}",
            f"{row['tasks_per_s']:.0f}",
            f"{row['percent_of_bound']:.1f}%",
        )
    console.print(bound)
