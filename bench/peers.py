"""Throughput against peers: bgtaskex beside Huey and Procrastinate, and the physical bound.

Every side drains the same number of no-op tasks queued beforehand (the enqueue is not
timed, and is done with durability off on every side alike, to save time, then
`os.sync()`), in ONE process,
in the same invocation, the sides alternating (each round in a rotated order):

* **bgtaskex**, in-process `Client.run_once(max_execution_time=3600)` (the same run as
  `bgtaskex run-once`), on SQLite with `synchronous=FULL` (its default) and on PostgreSQL
  (a scratch database per drain). The action is `bench.throughput:Noop`. Also `M` tasks of
  10 actions each.
* **Huey** (`SqliteHuey` with its defaults: WAL, `synchronous` left at the library's
  default, FULL; the benchmark reads both pragmas back and reports them): the consumer
  runs in-process (`huey.create_consumer(workers=1, worker_type="thread",
  periodic=False)`, i.e. `huey_consumer -w 1 -k thread`, the scheduler thread included),
  timed from `consumer.start()` until Huey's `SIGNAL_COMPLETE` has fired for the last task.
* **Procrastinate** on PostgreSQL (a scratch database per drain, its schema applied),
  an `async` no-op task, `app.run_worker_async(concurrency=1 | 4, wait=False)` with the
  app's pool already open, timed until the worker returns (it stops when it finds the
  queue empty and its jobs done).

The physical bound, sampled before and after each drain: single-row UPDATE + COMMIT per
second with the bare driver (stdlib sqlite3, WAL, FULL and NORMAL; plain psycopg on one
connection). `bound tasks/s = raw commits/s / bgtaskex write commits per task`, bgtaskex's
commits counted with SQLAlchemy events (`throughput.Counter`). The peers' write commits
are counted too: Huey's with a sqlite3 trace callback (a COMMIT after which
`total_changes` grew), Procrastinate's by wrapping its connector (each query is one
autocommit statement; those that change jobs are counted as writes).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import secrets
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import BenchError, masked, median, rotated
from .scratch import postgres_database, postgres_problem, sqlite_dir, with_options
from .throughput import NOOP_REF, Counter, raw_postgres, raw_sqlite

TASKS_FULL, TASKS_QUICK = 10_000, 2_000
MULTI_FULL, MULTI_QUICK = 1_000, 200
MULTI_ACTIONS = 10
RAW_SECONDS_FULL, RAW_SECONDS_QUICK = 1.0, 0.5
PEER_TIMEOUT_S = 1800.0

# Targets of #17, printed next to the figures (the start-up and memory ones come from
# bench/startup.py and bench/memory.py; `lock = "none"` against Procrastinate c=4 from
# bench/workers.py).
TARGET_VS_HUEY = 1.0
TARGET_PERCENT_OF_BOUND = 40.0


def peer_versions() -> dict[str, str | None]:
    """Versions of the optional peers (None: not installed)."""
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in ("huey", "procrastinate", "matplotlib", "psycopg"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


@dataclass(frozen=True)
class Side:
    key: str
    label: str
    engine: str  # "bgtaskex", "huey", "procrastinate"
    kind: str  # "sqlite" or "postgres"
    concurrency: int = 1


def _raw_postgres(conninfo: str, seconds: float) -> float:
    return raw_postgres(conninfo, "public", seconds)


# -- bgtaskex ----------------------------------------------------------------------------


def _bgtaskex_client(url: str, lock: Path, synchronous: str = "FULL") -> Any:
    from bgtaskex.client import connect
    from bgtaskex.config import Settings

    return connect(
        settings=Settings(
            database_url=url,
            lock_file=str(lock),
            max_execution_time=3600.0,
            sqlite_synchronous=synchronous,
        )
    )


@dataclass
class Target:
    """A fresh, empty bgtaskex database: its URL, the same with durability off (to fill it
    quickly), the lock file and the bare-driver commit meter next to it."""

    url: str
    fast_url: str
    fast_synchronous: str
    lock: Path
    raw_commits_per_s: Callable[[float], float]


@contextlib.contextmanager
def bgtaskex_target(kind: str, workdir: Path, pg_url: str) -> Iterator[Target]:
    """A new SQLite file in its own directory, or a scratch PostgreSQL database."""
    if kind == "sqlite":
        with sqlite_dir(workdir, "bgtaskex") as where:
            url = f"sqlite:///{where / 'bgtaskex.db'}"
            yield Target(
                url,
                url,
                "OFF",
                where / "run.lock",
                lambda s: raw_sqlite(where / "raw.db", "FULL", s),
            )
        return
    with postgres_database(pg_url, "bgtaskex_bench") as (url, conninfo):
        yield Target(
            url,
            with_options(url, "synchronous_commit=off"),
            "FULL",
            workdir / f"{secrets.token_hex(4)}.lock",
            lambda s: _raw_postgres(conninfo, s),
        )


def fill(target: Target, tasks: int, refs: list[Any]) -> None:
    """Enqueue `tasks` tasks of `refs` through the client, durability off (untimed)."""
    filler = _bgtaskex_client(target.fast_url, target.lock, target.fast_synchronous)
    try:
        for i in range(tasks):
            filler.enqueue(f"bench-{i}", refs)
    finally:
        filler.close()
    settle()


def settle() -> None:
    """Flush the dirty pages the untimed fill left (written without fsync): on ext4 an
    fsync also waits for other files' pending data, so the first timed commits and the
    bound's first sample would pay for the fill."""
    os.sync()


def drain_bgtaskex(
    side: Side, tasks: int, actions: int, workdir: Path, pg_url: str, raw_seconds: float
) -> dict[str, Any]:
    with bgtaskex_target(side.kind, workdir, pg_url) as target:
        fill(target, tasks, [NOOP_REF] * actions)
        client = _bgtaskex_client(target.url, target.lock)
        try:
            counter = Counter(client.store._engine)
            samples = [target.raw_commits_per_s(raw_seconds)]
            gc.collect()
            counter.take()
            began, cpu = time.perf_counter(), time.process_time()
            summary = client.run_once(max_execution_time=3600.0)
            drain_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu
            counts = counter.take()
            samples.append(target.raw_commits_per_s(raw_seconds))
        finally:
            client.close()
    expected = (tasks, tasks * actions, 0, 0)
    if (summary.finished, summary.actions, summary.failed, summary.errors) != expected:
        raise BenchError(f"{side.label} {tasks} x {actions}: {summary.line()}")
    return {
        "drain_s": drain_s,
        "cpu_s": cpu_s,
        "write_commits": counts["write_commits"],
        "commits": counts["commits"],
        "statements": counts["statements"],
        "raw_commits_per_s": samples,
    }


# -- Huey ---------------------------------------------------------------------------------


def _huey_noop() -> None:
    return None


class SqliteCommits:
    """Counts COMMITs (and those after which rows had changed) on sqlite3 connections."""

    def __init__(self) -> None:
        self.commits = self.write_commits = self.statements = 0
        self._lock = threading.Lock()

    def watch(self, conn: Any) -> None:
        last = [conn.total_changes]

        def trace(statement: str) -> None:
            with self._lock:
                self.statements += 1
                if statement.lstrip()[:6].upper() == "COMMIT":
                    self.commits += 1
                    if conn.total_changes != last[0]:
                        self.write_commits += 1
                    last[0] = conn.total_changes

        conn.set_trace_callback(trace)


def drain_huey(tasks: int, workdir: Path, raw_seconds: float) -> dict[str, Any]:
    from huey import SqliteHuey
    from huey.signals import SIGNAL_COMPLETE

    where = Path(tempfile.mkdtemp(prefix="huey-", dir=workdir))
    try:
        path = str(where / "huey.db")
        filler = SqliteHuey("bench", filename=path, fsync=False)  # enqueue without fsync
        fill = filler.task(name="noop")(_huey_noop)
        for _ in range(tasks):
            fill()
        filler.storage.close()
        settle()

        huey = SqliteHuey("bench", filename=path)  # the defaults, as the consumer gets them
        huey.task(name="noop")(_huey_noop)
        counts = SqliteCommits()
        create = huey.storage._create_connection

        def counted_connection() -> Any:
            conn = create()
            counts.watch(conn)
            return conn

        huey.storage._create_connection = counted_connection  # type: ignore[method-assign]
        pending = huey.pending_count()
        if pending != tasks:
            raise BenchError(f"Huey: {pending} tasks queued, expected {tasks}")
        pragmas = {
            "journal_mode": huey.storage.conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(
                huey.storage.conn.execute("PRAGMA synchronous").fetchone()[0], "?"
            ),
        }
        counts.commits = counts.write_commits = counts.statements = 0

        done = threading.Event()
        completed = [0]
        ended = [0.0]

        @huey.signal(SIGNAL_COMPLETE)
        def on_complete(signal_name: str, task: Any) -> None:
            completed[0] += 1
            if completed[0] == tasks:
                ended[0] = time.perf_counter()
                done.set()

        samples = [raw_sqlite(where / "raw.db", "FULL", raw_seconds)]
        consumer = huey.create_consumer(
            workers=1, worker_type="thread", periodic=False, check_worker_health=False
        )
        handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        gc.collect()
        began, cpu = time.perf_counter(), time.process_time()
        try:
            consumer.start()
            finished = done.wait(PEER_TIMEOUT_S)
            cpu_s = time.process_time() - cpu
        finally:
            consumer.stop(graceful=True)
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
        if not finished:
            raise BenchError(f"Huey: {completed[0]} of {tasks} tasks done after the timeout")
        drain_s = ended[0] - began
        write_commits, commits, statements = counts.write_commits, counts.commits, counts.statements
        samples.append(raw_sqlite(where / "raw.db", "FULL", raw_seconds))
        left = huey.pending_count()
        huey.storage.close()
        if left:
            raise BenchError(f"Huey: {left} tasks still queued after the drain")
        return {
            "drain_s": drain_s,
            "cpu_s": cpu_s,
            "write_commits": write_commits,
            "commits": commits,
            "statements": statements,
            "raw_commits_per_s": samples,
            "pragmas": pragmas,
        }
    finally:
        shutil.rmtree(where, ignore_errors=True)


# -- Procrastinate --------------------------------------------------------------------------


WRITE_QUERIES = (
    "defer_jobs",
    "defer_periodic_job",
    "fetch_job",
    "delete_old_jobs",
    "finish_job",
    "cancel_job",
    "retry_job",
    "register_worker",
    "unregister_worker",
    "update_heartbeat",
    "prune_stalled_workers",
)


def drain_procrastinate(
    tasks: int, concurrency: int, pg_url: str, raw_seconds: float
) -> dict[str, Any]:
    import procrastinate
    from procrastinate import sql

    writes = {sql.queries[name] for name in WRITE_QUERIES if name in sql.queries}
    with postgres_database(pg_url, "procrastinate_bench") as (_url, conninfo):
        connector = procrastinate.PsycopgConnector(conninfo=conninfo)
        app = procrastinate.App(connector=connector)

        @app.task(name="noop")
        async def noop() -> None:
            return None

        counted = {"queries": 0, "writes": 0}
        for name in ("execute_query_async", "execute_query_one_async", "execute_query_all_async"):
            original = getattr(connector, name)

            def wrapper(query: str, *, _original: Any = original, **arguments: Any) -> Any:
                counted["queries"] += 1
                if query in writes:
                    counted["writes"] += 1
                return _original(query, **arguments)

            setattr(connector, name, wrapper)

        async def main() -> dict[str, Any]:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()
                for start in range(0, tasks, 1000):
                    await noop.batch_defer_async(*({} for _ in range(min(1000, tasks - start))))
                settle()
                samples = [_raw_postgres(conninfo, raw_seconds)]
                counted["queries"] = counted["writes"] = 0
                gc.collect()
                began, cpu = time.perf_counter(), time.process_time()
                await app.run_worker_async(
                    concurrency=concurrency, wait=False, install_signal_handlers=False
                )
                drain_s, cpu_s = time.perf_counter() - began, time.process_time() - cpu
                queries, writes = counted["queries"], counted["writes"]
                samples.append(_raw_postgres(conninfo, raw_seconds))
                async with connector.pool.connection() as conn, conn.cursor() as cur:
                    await cur.execute(
                        "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
                    )
                    statuses = dict(await cur.fetchall())
            return {
                "drain_s": drain_s,
                "cpu_s": cpu_s,
                "write_commits": writes,
                "commits": queries,
                "statements": queries,
                "raw_commits_per_s": samples,
                "statuses": statuses,
            }

        result = asyncio.run(main())
    if result["statuses"] != {"succeeded": tasks}:
        raise BenchError(f"Procrastinate c{concurrency}: jobs by status {result['statuses']}")
    return result


# -- the benchmark ----------------------------------------------------------------------


def _sides(console: Console, postgres_url: str, use_postgres: bool) -> tuple[list[Side], dict]:
    versions = peer_versions()
    notes: dict[str, str] = {}
    sides = [Side("bgtaskex-sqlite", "bgtaskex SQLite FULL", "bgtaskex", "sqlite")]
    if versions["huey"]:
        sides.append(Side("huey-sqlite", f"Huey {versions['huey']} SqliteHuey", "huey", "sqlite"))
    else:
        notes["huey"] = "not installed (pip install -e '.[bench]')"
    problem = postgres_problem(postgres_url) if use_postgres else "disabled by --no-postgres"
    if problem is None:
        sides.append(Side("bgtaskex-postgres", "bgtaskex PostgreSQL", "bgtaskex", "postgres"))
        if versions["procrastinate"]:
            for c in (1, 4):
                sides.append(
                    Side(
                        f"procrastinate-c{c}",
                        f"Procrastinate {versions['procrastinate']} c={c}",
                        "procrastinate",
                        "postgres",
                        c,
                    )
                )
        else:
            notes["procrastinate"] = "not installed (pip install -e '.[bench]')"
    else:
        notes["postgres"] = problem
    for what, why in notes.items():
        console.print(f"[yellow]peers: {what} rows skipped: {escape(why)}[/yellow]")
    return sides, {"versions": versions, "skipped": notes}


def _one(
    side: Side,
    workload: str,
    tasks: int,
    actions: int,
    workdir: Path,
    pg_url: str,
    raw_seconds: float,
) -> dict[str, Any]:
    if side.engine == "bgtaskex":
        m = drain_bgtaskex(side, tasks, actions, workdir, pg_url, raw_seconds)
    elif side.engine == "huey":
        m = drain_huey(tasks, workdir, raw_seconds)
    else:
        m = drain_procrastinate(tasks, side.concurrency, pg_url, raw_seconds)
    n_actions = tasks * actions
    m.update(
        side=side.key,
        label=side.label,
        engine=side.engine,
        kind=side.kind,
        workload=workload,
        tasks=tasks,
        actions_per_task=actions,
        tasks_per_s=tasks / m["drain_s"],
        actions_per_s=n_actions / m["drain_s"],
        cpu_share=m["cpu_s"] / m["drain_s"],
        write_commits_per_action=m["write_commits"] / n_actions,
        commits_per_action=m["commits"] / n_actions,
        raw_commits_per_s_median=median(m["raw_commits_per_s"]),
    )
    # The bound of each side: its own write commits per action.
    m["bound_actions_per_s"] = (
        m["raw_commits_per_s_median"] / m["write_commits_per_action"]
        if m["write_commits_per_action"]
        else None
    )
    m["percent_of_bound"] = (
        100 * m["actions_per_s"] / m["bound_actions_per_s"] if m["bound_actions_per_s"] else None
    )
    return m


def run(
    console: Console,
    *,
    quick: bool = False,
    postgres_url: str,
    use_postgres: bool = True,
    tasks: int | None = None,
    multi_tasks: int | None = None,
    rounds: int = 1,
) -> dict[str, Any]:
    n = tasks or (TASKS_QUICK if quick else TASKS_FULL)
    m_tasks = multi_tasks or (MULTI_QUICK if quick else MULTI_FULL)
    raw_seconds = RAW_SECONDS_QUICK if quick else RAW_SECONDS_FULL
    sides, meta = _sides(console, postgres_url, use_postgres)
    console.print(
        "[dim]peers: versions "
        + ", ".join(f"{k} {v or '-'}" for k, v in meta["versions"].items())
        + "[/dim]"
    )
    bgtaskex_sides = [s for s in sides if s.engine == "bgtaskex"]
    results: list[dict[str, Any]] = []
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-peers-") as tmp:
        workdir = Path(tmp)
        for r in range(rounds):
            plan = [(s, "single", n, 1) for s in sides]
            plan += [(s, "multi", m_tasks, MULTI_ACTIONS) for s in bgtaskex_sides]
            for side, workload, count, actions in rotated(plan, r):
                one = _one(side, workload, count, actions, workdir, postgres_url, raw_seconds)
                one["round"] = r
                results.append(one)
                console.print(
                    f"[dim]round {r + 1}/{rounds} {side.label:<28} {count:>6} x {actions:<2}: "
                    f"{one['drain_s']:.1f}s, {one['actions_per_s']:.0f} actions/s, "
                    f"{one['write_commits_per_action']:.2f} write commits/action, "
                    f"raw {one['raw_commits_per_s_median']:.0f}/s[/dim]"
                )
    summary, targets = _summarise(results, sides, rounds)
    others = _other_targets(console, quick, postgres_url if use_postgres else None)
    for result in others.values():
        targets += [_listed(t) for t in result["targets"]]
    elapsed = time.monotonic() - began
    _print(console, summary, targets, rounds, meta, results)
    console.print(f"[dim]peers benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "tasks": n,
        "multi_tasks": m_tasks,
        "multi_actions": MULTI_ACTIONS,
        "rounds": rounds,
        "raw_seconds_per_sample": raw_seconds,
        "postgres_url": masked(postgres_url),
        **meta,
        "bgtaskex_drain": "in-process Client.run_once(max_execution_time=3600)",
        "huey_consumer": "in-process create_consumer(workers=1, worker_type='thread', "
        "periodic=False), timed from start() to the last SIGNAL_COMPLETE",
        "procrastinate_worker": "in-process run_worker_async(concurrency=c, wait=False), "
        "async no-op task, pool opened before timing",
        "elapsed_s": elapsed,
        "summary": summary,
        "targets": targets,
        "measurements": results,
        **others,
    }


def _other_targets(console: Console, quick: bool, pg_url: str | None) -> dict[str, Any]:
    """The targets of #17 measured by bench/memory.py (and bench/startup.py), in this
    same invocation, so that `--only peers` prints them all."""
    from . import memory, startup

    found = {"startup": startup.run(console, quick=quick)}
    found["memory"] = memory.run(console, quick=quick, postgres_url=pg_url)
    return found


def _listed(found: dict[str, Any]) -> dict[str, Any]:
    """A target of another benchmark as a line of this one's table."""
    measured = found["measured"]
    return {**found, "value": measured, "shown": f"{measured:.2f}x"}


def _summarise(
    results: list[dict[str, Any]], sides: list[Side], rounds: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    by = {(m["round"], m["side"], m["workload"]): m for m in results}
    peers = {
        "huey": "huey-sqlite",
        "procrastinate_c1": "procrastinate-c1",
        "procrastinate_c4": "procrastinate-c4",
    }
    summary = []
    for workload in ("single", "multi"):
        for side in sides:
            ms = [m for m in results if m["side"] == side.key and m["workload"] == workload]
            if not ms:
                continue
            row: dict[str, Any] = {
                "side": side.key,
                "label": side.label,
                "engine": side.engine,
                "workload": workload,
                "tasks": ms[0]["tasks"],
                "actions_per_task": ms[0]["actions_per_task"],
            }
            for key in (
                "tasks_per_s",
                "actions_per_s",
                "cpu_share",
                "write_commits_per_action",
                "commits_per_action",
                "raw_commits_per_s_median",
            ):
                row[key] = median([m[key] for m in ms])
            bounds = [m["percent_of_bound"] for m in ms if m["percent_of_bound"] is not None]
            row["percent_of_bound"] = median(bounds) if bounds else None
            row["bound_actions_per_s"] = (
                median([m["bound_actions_per_s"] for m in ms]) if bounds else None
            )
            # Ratios to a peer: per round, this side's actions/s over the peer's jobs/s on
            # the single workload of the same round (a peer job ~ one bgtaskex action).
            for name, peer in peers.items():
                ratios = [
                    m["actions_per_s"] / by[(m["round"], peer, "single")]["actions_per_s"]
                    for m in ms
                    if (m["round"], peer, "single") in by
                ]
                row[f"x_{name}"] = median(ratios) if ratios else None
            summary.append(row)

    def find(side: str, workload: str = "single") -> dict[str, Any] | None:
        return next((r for r in summary if r["side"] == side and r["workload"] == workload), None)

    targets = []
    sq, sq_multi = find("bgtaskex-sqlite"), find("bgtaskex-sqlite", "multi")
    pg = find("bgtaskex-postgres")
    if sq and sq["x_huey"] is not None:
        targets.append(_target("SQLite FULL, 1 action", sq["x_huey"], TARGET_VS_HUEY, "x Huey"))
    if sq and sq["percent_of_bound"] is not None:
        targets.append(
            _target("SQLite FULL, 1 action", sq["percent_of_bound"], TARGET_PERCENT_OF_BOUND, "%")
        )
    if sq_multi and sq_multi["x_huey"] is not None:
        what = f"SQLite FULL, {MULTI_ACTIONS} actions (actions/s over Huey's jobs/s)"
        targets.append(_target(what, sq_multi["x_huey"], TARGET_VS_HUEY, "x Huey"))
    if pg and pg["percent_of_bound"] is not None:
        what = "PostgreSQL, 1 runner"
        targets.append(_target(what, pg["percent_of_bound"], TARGET_PERCENT_OF_BOUND, "%"))
    return summary, targets


def _target(what: str, value: float, goal: float, unit: str) -> dict[str, Any]:
    """One line of the targets table: at least `goal` (unit "%": of the physical bound)."""
    if unit == "%":
        target, shown = f"{what}: >= {goal:.0f}% of the bound", f"{value:.0f}%"
    else:
        target, shown = f"{what}: >= {goal:.1f}{unit}", f"{value:.2f}x"
    return {"target": target, "value": value, "shown": shown, "met": value >= goal}


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _print(
    console: Console,
    summary: list[dict[str, Any]],
    targets: list[dict[str, Any]],
    rounds: int,
    meta: dict[str, Any],
    results: list[dict[str, Any]],
) -> None:
    pragmas = next((m["pragmas"] for m in results if "pragmas" in m), None)
    if pragmas:
        console.print(
            f"[dim]SqliteHuey as configured by default: journal_mode={pragmas['journal_mode']}, "
            f"synchronous={pragmas['synchronous']}[/dim]"
        )
    what = "median of " + (f"{rounds} rounds" if rounds > 1 else "1 round")
    table = Table(
        title=f"Throughput against peers: drain of no-op tasks queued beforehand, one process "
        f"({what}); bound = raw UPDATE+COMMIT/s / the side's own write commits per action",
        title_justify="left",
    )
    columns = [
        "side",
        "tasks x actions",
        "tasks/s",
        "actions/s",
        "x Huey",
        "x Procr. c=1",
        "x Procr. c=4",
        "write commits/action",
        "all commits/action",
        "raw commits/s",
        "bound actions/s",
        "% of bound",
        "cpu % of wall",
    ]
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in summary:
        table.add_row(
            row["label"],
            f"{row['tasks']} x {row['actions_per_task']}",
            f"{row['tasks_per_s']:.0f}",
            f"{row['actions_per_s']:.0f}",
            _fmt(row["x_huey"], ".2f"),
            _fmt(row["x_procrastinate_c1"], ".2f"),
            _fmt(row["x_procrastinate_c4"], ".2f"),
            f"{row['write_commits_per_action']:.2f}",
            f"{row['commits_per_action']:.2f}",
            f"{row['raw_commits_per_s_median']:.0f}",
            _fmt(row["bound_actions_per_s"], ".0f"),
            _fmt(row["percent_of_bound"], ".0f", "%"),
            f"{row['cpu_share']:.0%}",
        )
    console.print(table)
    console.print(
        "[dim]x Huey / x Procr.: this row's actions/s over the peer's jobs/s in the same round "
        "(a peer job stands for one bgtaskex action). Raw commits/s: stdlib sqlite3 WAL FULL "
        "or plain psycopg, sampled just before and after the drain.[/dim]"
    )
    if targets:
        tt = Table(title="Targets (peers)", title_justify="left")
        for column in ("target", "measured", "met"):
            tt.add_column(column, justify="left" if column == "target" else "right")
        for t in targets:
            met = "[green]yes[/green]" if t["met"] else "[red]no[/red]"
            tt.add_row(t["target"], t["shown"], met)
        console.print(tt)
    for what, why in meta["skipped"].items():
        console.print(f"[yellow]{what}: skipped ({escape(why)})[/yellow]")
