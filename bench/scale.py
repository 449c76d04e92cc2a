"""How the operators' queries and the run scale with the number of tasks, on SQLite.

Databases of 10^4, 10^5 and 10^6 tasks (quick: 10^4, 10^5) are built fast: the schema
through bgtaskex (`Store(url).ensure_schema()`, i.e. the Alembic migration), then rows
bulk-inserted with stdlib sqlite3 `executemany` in big transactions. Each task has one
action and one event; the mix is ~1% waiting (created / paused / running, `run_order` as
`models.run_order` computes it), ~90% finished, ~9% failed, over several queues and both
types, created over 90 days. Built databases are cached under bench/results/scale-cache/
(gitignored), keyed by size, row-format version and schema revision; `--rebuild` forces
a new build. No ANALYZE is run on them: bgtaskex never runs it, so the planner works
without statistics, as it does in the field.

Measured per size (median of several runs, after one warm-up: warm page cache):
the in-process equivalents of `bgtaskex list` (`Store.list_tasks(limit=50)` with no filter,
`--status failed`, `--queue`, `--name 'report*'`, and the `count_tasks` the CLI adds when
the page is full), `next_task`, `stats`, `stuck_tasks`, `purge_preview`, and the wall time
of `bgtaskex list` / `bgtaskex stats` as subprocesses (start-up included). The SQL each call
executes is captured and its EXPLAIN QUERY PLAN printed for the largest size: flat time
from 10^4 to 10^6 means an index range, linear time a full scan (of a table or an index).

Memory: peak RSS (the child's own ru_maxrss, from os.wait4 in a small launcher) of
`bgtaskex run-once --max-execution-time 1` on a database with 10 waiting tasks against
one with 10^6 tasks, all waiting (quick 10^5), each task one
`bgtaskex.examples:NothingToDo` action (skipped at once: cheap).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import RESULTS_DIR, BenchError, median, quartiles
from .rss import peak_rss

SIZES_FULL = (10_000, 100_000, 1_000_000)
SIZES_QUICK = (10_000, 100_000)
ALL_WAITING_FULL, ALL_WAITING_QUICK = 1_000_000, 100_000
FEW_WAITING = 10
RUNS_FULL, RUNS_QUICK = 7, 5  # in-process timings per query
CLI_RUNS_FULL, CLI_RUNS_QUICK = 5, 3  # subprocess timings per command
RSS_RUNS = 3
LIST_TARGET_MS = 100.0  # `list` of 50 at 10^6 on SQLite
RSS_TARGET_RATIO = 1.2  # peak RSS of run-once, 10^6 waiting / 10 waiting

CACHE_DIR = RESULTS_DIR / "scale-cache"
ROW_FORMAT = 1  # bump when the generated rows change: cached databases are rebuilt
SEED = 20261128
CHUNK = 50_000  # tasks per transaction while building
SPAN = timedelta(days=90)
NOOP_REF = "bgtaskex.examples:NothingToDo"  # init_params returns False: skipped, no execute

# (queue, share, name prefix): --queue and --name pick from these.
QUEUES = (
    ("default", 0.45, "job"),
    ("reports", 0.20, "report"),
    ("emails", 0.20, "email"),
    ("imports", 0.10, "import"),
    ("billing", 0.045, "invoice"),
    ("rare", 0.005, "audit"),
)
FILTER_QUEUE = "emails"
RARE_QUEUE = "rare"
NAME_GLOB = "report*"
WAITING_STATUSES = (("created", 0.60), ("paused", 0.25), ("running", 0.15))
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/jobs.py", line 118, in execute\n'
    "    rows = self.client.fetch(self.params['cursor'])\n"
    '  File "/srv/app/client.py", line 42, in fetch\n'
    "    raise TimeoutError('upstream did not answer in 30s')\n"
    "TimeoutError: upstream did not answer in 30s\n"
)


# -- building the databases --------------------------------------------------------------


def _stamp(value: datetime) -> str:
    """A timestamp as bgtaskex stores it on SQLite: naive UTC text with microseconds."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _pick(rng: random.Random, choices: tuple[tuple[str, float], ...]) -> str:
    x = rng.random()
    for value, share in choices:
        x -= share
        if x < 0:
            return value
    return choices[-1][0]


def _rows(
    n: int, built_at: datetime, all_waiting: bool
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(tasks, actions, events) rows, CHUNK tasks at a time, ids 1..n in creation order."""
    from bgtaskex.models import run_order

    rng = random.Random(SEED + n + (1 if all_waiting else 0))
    queues = tuple((q, share) for q, share, _ in QUEUES)
    prefix = {q: p for q, _, p in QUEUES}
    begin = built_at - SPAN
    step = SPAN / max(n, 1)
    for first in range(1, n + 1, CHUNK):
        tasks, actions, events = [], [], []
        for task_id in range(first, min(first + CHUNK, n + 1)):
            created = begin + step * task_id
            queue = _pick(rng, queues)
            type_ = "interactive" if rng.random() < 0.2 else "cron"
            x = rng.random()
            if all_waiting:
                status = "created"
            elif x < 0.01:
                status = _pick(rng, WAITING_STATUSES)
            elif x < 0.10:
                status = "failed"
            else:
                status = "finished"
            order = run_order(type_, status)
            ended = status in ("finished", "failed")
            ran = status != "created"
            took = rng.uniform(0.05, 600.0)
            started = created + timedelta(seconds=rng.uniform(0.0, 60.0))
            ended_at = started + timedelta(seconds=took) if ended else None
            updated = ended_at or (started if ran else created)
            run_id = f"{rng.getrandbits(64):016x}" if ran else None
            tasks.append(
                (
                    task_id,
                    f"{prefix[queue]}-{task_id}",
                    type_,
                    queue,
                    status,
                    order,
                    1 if ran else None,
                    run_id,
                    _stamp(created),
                    _stamp(updated),
                    _stamp(ended_at) if ended_at else None,
                    None,
                )
            )
            action_status = {
                "finished": "done",
                "failed": "failed",
                "created": "pending",
            }.get(status, "active")
            params = json.dumps({"cursor": rng.randrange(10_000), "chunk": 500})
            progress = (
                (rng.uniform(0, 100), 100.0, "working") if status in ("paused", "running") else None
            )
            actions.append(
                (
                    task_id,  # one action per task: its id is the task's
                    task_id,
                    1,
                    NOOP_REF,
                    action_status,
                    5 if status == "failed" else (1 if ran else 0),
                    params,
                    params,
                    _stamp(started) if ran else None,
                    _stamp(ended_at) if ended_at else None,
                    *(progress or (None, None, None)),
                    took if ended else 0.0,
                )
            )
            if status == "created":
                event = (None, None, None, "created", "enqueued with 1 action(s)", None)
            elif status == "failed":
                event = (run_id, 1, "running", "failed", "action 1 failed 5 times", TRACEBACK)
            else:
                event = (run_id, 1, "running", status, f"action 1 {status}", None)
            events.append((task_id, task_id, _stamp(updated), *event))
        yield tasks, actions, events


def build(path: Path, n: int, *, all_waiting: bool = False) -> dict[str, Any]:
    """Create the schema through bgtaskex, then bulk-insert `n` tasks with stdlib sqlite3."""
    from bgtaskex.store import Store

    began = time.perf_counter()
    built_at = datetime.now(UTC)
    tmp = path.with_name(path.name + ".building")
    for stale in tmp.parent.glob(tmp.name + "*"):
        stale.unlink()
    store = Store(f"sqlite:///{tmp}")
    try:
        store.ensure_schema()
    finally:
        store.close()
    conn = sqlite3.connect(tmp, isolation_level=None)
    try:
        # A throw-away file until it is renamed: no journal, no fsync, a big page cache.
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        for tasks, actions, events in _rows(n, built_at, all_waiting):
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO bgtaskex_tasks (id, name, type, queue, status, run_order, "
                "current_rank, last_run_id, created_at, updated_at, ended_at, "
                "cancel_requested_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                tasks,
            )
            conn.executemany(
                "INSERT INTO bgtaskex_actions (id, task_id, rank, ref, status, attempts, "
                "params, initial_params, started_at, ended_at, progress_done, "
                "progress_total, progress_message, elapsed) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                actions,
            )
            conn.executemany(
                "INSERT INTO bgtaskex_events (id, task_id, at, run_id, rank, old_status, "
                "new_status, message, error) VALUES (?,?,?,?,?,?,?,?,?)",
                events,
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")  # as bgtaskex leaves its databases
        counts = dict(
            conn.execute("SELECT status, count(*) FROM bgtaskex_tasks GROUP BY status").fetchall()
        )
    finally:
        conn.close()
    tmp.rename(path)
    meta = {
        "tasks": n,
        "all_waiting": all_waiting,
        "built_at": built_at.isoformat(timespec="seconds"),
        "build_s": time.perf_counter() - began,
        "statuses": counts,
        "bytes": path.stat().st_size,
        "row_format": ROW_FORMAT,
    }
    _meta_path(path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return meta


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def cached(
    n: int, *, all_waiting: bool = False, rebuild: bool = False
) -> tuple[Path, dict[str, Any]]:
    """The cached database of `n` tasks (built when missing or stale) and its metadata."""
    import hashlib

    import bgtaskex
    from bgtaskex.store.probe import HEAD_REVISION

    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    kind = "waiting" if all_waiting else "mixed"
    # The schema's text, not only its revision: an unreleased revision may still change.
    migrations = Path(bgtaskex.__file__).parent / "migrations" / "versions"
    schema = hashlib.sha256(
        b"".join(f.read_bytes() for f in sorted(migrations.glob("*.py")))
    ).hexdigest()[:8]
    path = CACHE_DIR / f"{kind}-{n}-r{HEAD_REVISION}-{schema}-f{ROW_FORMAT}.db"
    meta_path = _meta_path(path)
    if not rebuild and path.exists() and meta_path.exists():
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["cached"] = True
        return path, meta
    for old in CACHE_DIR.glob(path.name + "*"):
        old.unlink()
    meta = build(path, n, all_waiting=all_waiting)
    meta["cached"] = False
    return path, meta


# -- what is measured --------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    key: str
    label: str
    call: Callable[[Any, datetime], Any]  # (Store, built_at) -> a result to show
    list_target: bool = False  # held to LIST_TARGET_MS at the largest size


class _DryRun(Exception):
    """Raised before purge's first DELETE: the batch SELECT ran, nothing is deleted."""


def _purge_batch(store: Any, where: Any) -> str:
    """The SELECT of one `purge` batch (what retention runs each run-once), timed through
    bgtaskex's own code and rolled back before it deletes anything."""
    from sqlalchemy import event

    def stop(_conn: Any, _cur: Any, sql: str, *_: Any) -> None:
        if sql.lstrip().upper().startswith("DELETE"):
            raise _DryRun

    event.listen(store._engine, "before_cursor_execute", stop)
    try:
        store.admin.purge(where, batch=500)
    except _DryRun:
        return "batch of 500 selected"
    finally:
        event.remove(store._engine, "before_cursor_execute", stop)
    return "nothing to purge"


def queries() -> list[Query]:
    from bgtaskex.models import TaskFilter

    failed = TaskFilter(statuses=frozenset({"failed"}))
    queue = TaskFilter(queues=frozenset({FILTER_QUEUE}))
    rare = TaskFilter(queues=frozenset({RARE_QUEUE}))
    name = TaskFilter(name_glob=NAME_GLOB)

    def listed(where: Any) -> Callable[[Any, datetime], Any]:
        return lambda s, _at: f"{len(s.list_tasks(where, limit=50))} rows"

    def counted(where: Any) -> Callable[[Any, datetime], Any]:
        return lambda s, _at: f"{s.count_tasks(where):,}"

    def retention(s: Any, at: datetime) -> str:
        where = TaskFilter(statuses=frozenset({"finished"}), ended_before=at - timedelta(days=30))
        return _purge_batch(s, where)

    def preview(days: int | None) -> Callable[[Any, datetime], Any]:
        def call(s: Any, at: datetime) -> str:
            where = TaskFilter(ended_before=at - timedelta(days=days)) if days else None
            count, ids = s.admin.purge_preview(where)
            return f"{count:,} ({len(ids)} ids)"

        return call

    return [
        Query("list", "list_tasks(limit=50)", listed(None), list_target=True),
        Query("count", "count_tasks()", counted(None)),
        Query("list_failed", "list_tasks --status failed", listed(failed)),
        Query("count_failed", "count_tasks --status failed", counted(failed)),
        Query("list_queue", f"list_tasks --queue {FILTER_QUEUE}", listed(queue)),
        Query("count_queue", f"count_tasks --queue {FILTER_QUEUE}", counted(queue)),
        Query("list_rare", f"list_tasks --queue {RARE_QUEUE} (0.5%)", listed(rare)),
        Query("list_name", f"list_tasks --name '{NAME_GLOB}'", listed(name)),
        Query("count_name", f"count_tasks --name '{NAME_GLOB}'", counted(name)),
        Query(
            "next_task",
            "next_task (as the run calls it)",
            lambda s, _at: "a task" if s.next_task(skip_run="0" * 32, exclude=()) else "none",
        ),
        Query("stats", "stats()", lambda s, _at: f"{len(s.admin.stats().counts)} groups"),
        Query(
            "stuck",
            "stuck_tasks (healthy: none stuck)",
            lambda s, at: f"{s.admin.stuck_tasks(at - SPAN - timedelta(days=1))[0]:,} stuck",
        ),
        Query("purge_preview", "purge_preview()", preview(None)),
        Query("purge_preview_30d", "purge_preview --older-than 30d", preview(30)),
        Query("retention_batch", "retention: one purge batch SELECT", retention),
    ]


# -- plans --------------------------------------------------------------------------------


class _Recorder:
    """The SELECT statements a store executes, with their parameters (the measured calls
    only read; the purge batch is stopped at its first DELETE)."""

    def __init__(self, store: Any) -> None:
        from sqlalchemy import event

        self.statements: list[tuple[str, Any]] = []
        self.on = False
        event.listen(store._engine, "before_cursor_execute", self._record)

    def _record(self, _c: Any, _cur: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if self.on and not many and sql.lstrip()[:6].upper() == "SELECT":
            self.statements.append((sql, params))


def _short_sql(sql: str) -> str:
    sql = " ".join(sql.split()).replace("bgtaskex_", "")
    sql = re.sub(r"\(\?(, \?){3,}\)", "(?, ..., ?)", sql)
    sql = sql.replace(" LIMIT ? OFFSET ?", " LIMIT ?")
    if sql.startswith("SELECT") and len(sql.split(" FROM ", 1)[0]) > 60:
        sql = "SELECT ... FROM " + sql.split(" FROM ", 1)[1]
    sql = sql.replace("tasks.", "").replace("actions.", "")
    return sql if len(sql) <= 150 else sql[:147] + "..."


def explain(path: Path, statements: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """EXPLAIN QUERY PLAN of each statement, on a read-only connection to the file."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = []
        for sql, params in statements:
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
            full = [
                line for line in plan if line.startswith("SCAN bgtaskex_") and " USING " not in line
            ]
            found.append(
                {
                    "sql": _short_sql(sql),
                    "plan": plan,
                    "full_scan": bool(full),
                    "index_walk": any(
                        line.startswith("SCAN bgtaskex_") and " USING " in line for line in plan
                    ),
                    "sorts": any("TEMP B-TREE" in line for line in plan),
                }
            )
        return found
    finally:
        conn.close()


# -- one size -----------------------------------------------------------------------------


def _cli_env(home: Path) -> dict[str, str]:
    from .startup import _clean_env

    return _clean_env(home)


def _cli(argv: list[str], env: dict[str, str], cwd: Path, expect: str) -> float:
    began = time.perf_counter()
    proc = subprocess.run(
        argv, env=env, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    wall = time.perf_counter() - began
    if proc.returncode != 0 or expect not in proc.stdout:
        raise BenchError(
            f"{' '.join(argv[1:])}: exit {proc.returncode}, expected {expect!r} in stdout\n"
            f"stdout: {proc.stdout.strip()[:500]}\nstderr: {proc.stderr.strip()[:2000]}"
        )
    return wall


def measure_size(
    path: Path, meta: dict[str, Any], runs: int, cli_runs: int, tmp: Path
) -> dict[str, Any]:
    from bgtaskex.store import Store

    from .startup import _bgtaskex_argv

    built_at = datetime.fromisoformat(meta["built_at"])
    url = f"sqlite:///{path}"
    store = Store(url)
    recorder = _Recorder(store)
    rows: list[dict[str, Any]] = []
    try:
        store.ensure_schema()  # current: one SELECT, no change
        for query in queries():
            recorder.statements.clear()
            recorder.on = True
            result = query.call(store, built_at)  # warm-up, and the SQL it runs
            recorder.on = False
            statements = list(recorder.statements)
            samples = []
            for _ in range(runs):
                began = time.perf_counter()
                query.call(store, built_at)
                samples.append(time.perf_counter() - began)
            rows.append(
                {
                    "key": query.key,
                    "label": query.label,
                    "kind": "in-process",
                    "list_target": query.list_target,
                    "result": str(result),
                    "samples_s": samples,
                    "plans": explain(path, statements),
                }
            )
    finally:
        store.close()

    argv = _bgtaskex_argv()
    home, cwd = tmp / f"home-{meta['tasks']}", tmp / "cwd"
    cwd.mkdir(exist_ok=True)
    env = _cli_env(home)
    commands = [
        ("cli_list", "bgtaskex list (subprocess)", [*argv, "--database-url", url, "list"], "more"),
        (
            "cli_stats",
            "bgtaskex stats (subprocess)",
            [*argv, "--database-url", url, "stats"],
            "TASKS",
        ),
    ]
    cli_samples: dict[str, list[float]] = {key: [] for key, *_ in commands}
    for _key, _label, command, expect in commands:  # warm-up
        _cli(command, env, cwd, expect)
    for _ in range(cli_runs):
        for key, _label, command, expect in commands:
            cli_samples[key].append(_cli(command, env, cwd, expect))
    for key, label, _command, _expect in commands:
        rows.append(
            {
                "key": key,
                "label": label,
                "kind": "subprocess",
                "list_target": False,
                "result": "exit 0",
                "samples_s": cli_samples[key],
                "plans": [],
            }
        )
    for row in rows:
        row["median_ms"] = median(row["samples_s"]) * 1000
        lo, hi = quartiles(row["samples_s"])
        row["p25_ms"], row["p75_ms"] = lo * 1000, hi * 1000
    return {"tasks": meta["tasks"], "database": meta, "queries": rows}


# -- memory of run-once --------------------------------------------------------------------


def measure_memory(waiting_n: int, tmp: Path, rebuild: bool) -> dict[str, Any]:
    """Peak RSS of `bgtaskex run-once --max-execution-time 1` on FEW_WAITING waiting tasks
    against `waiting_n` waiting tasks, alternating. Both run on scratch databases (a run
    changes them): a fresh one refilled with FEW_WAITING tasks before each of its runs,
    and a copy of the cached all-waiting database."""
    from bgtaskex.client import connect

    from .startup import _bgtaskex_argv

    big_cached, big_meta = cached(waiting_n, all_waiting=True, rebuild=rebuild)
    small_db, big_db = tmp / "rss-few" / "bgtaskex.db", tmp / "rss-many" / "bgtaskex.db"
    small_db.parent.mkdir()
    big_db.parent.mkdir()
    began = time.perf_counter()
    shutil.copyfile(big_cached, big_db)
    with big_db.open("rb+") as copy:  # written back before the runs, not during their fsyncs
        os.fsync(copy.fileno())
    copy_s = time.perf_counter() - began

    def refill() -> None:
        with connect(f"sqlite:///{small_db}") as client:
            for i in range(FEW_WAITING):
                client.enqueue(f"rss-{i}", [NOOP_REF])

    argv = _bgtaskex_argv()
    env = _cli_env(tmp / "home-rss")
    cases = [("few", FEW_WAITING, small_db, refill), ("many", waiting_n, big_db, None)]
    found = {
        key: {"waiting": n, "rss_kib": [], "wall_s": [], "finished": []} for key, n, *_ in cases
    }
    for r in range(RSS_RUNS):
        for key, _n, db, before in cases if r % 2 == 0 else cases[::-1]:
            if before is not None:
                before()
            command = [*argv, "--database-url", f"sqlite:///{db}", "run-once"]
            command += ["--max-execution-time", "1", "--json"]
            rss, wall, stdout = peak_rss(command, env, tmp)
            finished = json.loads(stdout.strip().splitlines()[-1]).get("finished") or 0
            if finished < (FEW_WAITING if key == "few" else 1):
                raise BenchError(f"run-once on {db}: {finished} finished: {stdout.strip()[:300]}")
            found[key]["rss_kib"].append(rss)
            found[key]["wall_s"].append(wall)
            found[key]["finished"].append(finished)
    for case in found.values():
        case["rss_mib_median"] = median(case["rss_kib"]) / 1024
    ratio = found["many"]["rss_mib_median"] / found["few"]["rss_mib_median"]
    return {
        "waiting_tasks": waiting_n,
        "database": big_meta,
        "copy_s": copy_s,
        "cases": found,
        "ratio": ratio,
        "target_ratio": RSS_TARGET_RATIO,
        "met": ratio <= RSS_TARGET_RATIO,
    }


# -- the benchmark ------------------------------------------------------------------------


def _exponent(small: float, large: float, n_small: int, n_large: int) -> float:
    """k in time ~ n^k between two sizes: 0 flat (an index range), 1 linear (a scan)."""
    if small <= 0 or large <= 0:
        return 0.0
    return math.log(large / small) / math.log(n_large / n_small)


def _verdict(k: float) -> str:
    if k < 0.15:
        return "flat"
    if k < 0.7:
        return "[yellow]sublinear[/yellow]"
    return "[red]linear[/red]"


def _plan_text(plans: list[dict[str, Any]]) -> str:
    lines = []
    for p in plans:
        for line in p["plan"]:
            short = line.replace("bgtaskex_", "")
            if line.startswith("SCAN bgtaskex_") and " USING " not in line:
                short = f"[red]{short} (full table scan)[/red]"
            elif "TEMP B-TREE" in line:
                short = f"[yellow]{short}[/yellow]"
            lines.append(short)
    return "\n".join(lines)


def run(console: Console, *, quick: bool = False, rebuild: bool = False) -> dict[str, Any]:
    sizes = SIZES_QUICK if quick else SIZES_FULL
    runs = RUNS_QUICK if quick else RUNS_FULL
    cli_runs = CLI_RUNS_QUICK if quick else CLI_RUNS_FULL
    waiting_n = ALL_WAITING_QUICK if quick else ALL_WAITING_FULL
    began = time.monotonic()
    databases = []
    for n in sizes:
        path, meta = cached(n, rebuild=rebuild)
        databases.append((path, meta))
        how = "cached" if meta["cached"] else f"built in {meta['build_s']:.1f}s"
        console.print(
            f"[dim]{n:>9,} tasks: {path.name} ({meta['bytes'] / 2**20:.0f} MiB, {how}, "
            f"rows of {meta['built_at']})[/dim]"
        )
    oldest = min(datetime.fromisoformat(meta["built_at"]) for _path, meta in databases)
    if datetime.now(UTC) - oldest > timedelta(days=1):
        console.print(
            "[yellow]cached rows are more than a day old: the 1h/1d windows of stats() find "
            "no ended action (cheaper than with fresh rows); --rebuild to refresh[/yellow]"
        )
    results = []
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        for path, meta in databases:
            one = measure_size(path, meta, runs, cli_runs, tmp)
            results.append(one)
            _print_size(console, one, runs, cli_runs)
        memory = measure_memory(waiting_n, tmp, rebuild)
    summary = _print_summary(console, results, memory)
    elapsed = time.monotonic() - began
    console.print(f"[dim]scale benchmark took {elapsed:.1f}s[/dim]\n")
    return {
        "sizes": list(sizes),
        "runs": runs,
        "cli_runs": cli_runs,
        "analyze": False,
        "elapsed_s": elapsed,
        "results": results,
        "memory": memory,
        "summary": summary,
    }


def _print_size(console: Console, one: dict[str, Any], runs: int, cli_runs: int) -> None:
    meta = one["database"]
    statuses = ", ".join(f"{k} {v:,}" for k, v in sorted(meta["statuses"].items()))
    table = Table(
        title=f"{one['tasks']:,} tasks ({statuses}): median of {runs} runs in-process, "
        f"{cli_runs} as subprocesses, after a warm-up",
        title_justify="left",
    )
    for column in ("query", "median ms", "p25-p75 ms", "result", "plan"):
        table.add_column(column, justify="right" if "ms" in column else "left")
    for row in one["queries"]:
        flags = []
        if any(p["full_scan"] for p in row["plans"]):
            flags.append("[red]full scan[/red]")
        if any(p["index_walk"] for p in row["plans"]):
            flags.append("index walk")
        if any(p["sorts"] for p in row["plans"]):
            flags.append("[yellow]sort[/yellow]")
        plan = ", ".join(flags) or ("index ranges" if row["plans"] else "")
        table.add_row(
            row["label"],
            f"{row['median_ms']:.1f}",
            f"{row['p25_ms']:.1f}-{row['p75_ms']:.1f}",
            row["result"],
            plan,
        )
    console.print(table)


def _print_summary(
    console: Console, results: list[dict[str, Any]], memory: dict[str, Any]
) -> dict[str, Any]:
    small, large = results[0], results[-1]
    n_small, n_large = small["tasks"], large["tasks"]
    table = Table(
        title=f"Scaling: median ms per size; ratio = time at {n_large:,} / time at {n_small:,} "
        f"({n_large // n_small}x the tasks); k in time ~ n^k",
        title_justify="left",
    )
    table.add_column("query")
    for one in results:
        table.add_column(f"{one['tasks']:,}", justify="right")
    for column in ("ratio", "k", "verdict"):
        table.add_column(column, justify="right" if column != "verdict" else "left")
    rows = []
    by_key = [{row["key"]: row for row in one["queries"]} for one in results]
    for row in small["queries"]:
        key = row["key"]
        times = [keyed[key]["median_ms"] for keyed in by_key]
        k = _exponent(times[0], times[-1], n_small, n_large)
        rows.append(
            {
                "key": key,
                "label": row["label"],
                "median_ms": times,
                "ratio": times[-1] / times[0],
                "k": k,
            }
        )
        table.add_row(
            row["label"],
            *(f"{t:.1f}" for t in times),
            f"{times[-1] / times[0]:.1f}",
            f"{k:.2f}",
            _verdict(k),
        )
    console.print(table)

    plans = Table(
        title=f"EXPLAIN QUERY PLAN at {n_large:,} tasks (no ANALYZE, as bgtaskex leaves its "
        "databases): every SELECT each call runs",
        title_justify="left",
    )
    plans.add_column("query")
    plans.add_column("statement")
    plans.add_column("plan")
    for row in large["queries"]:
        for i, p in enumerate(row["plans"]):
            plans.add_row(row["label"] if i == 0 else "", p["sql"], _plan_text([p]))
    console.print(plans)

    mem = Table(
        title="Peak RSS of `bgtaskex run-once --max-execution-time 1` "
        f"(median of {RSS_RUNS}, alternating; NothingToDo actions)",
        title_justify="left",
    )
    for column in ("database", "peak RSS MiB", "wall s", "tasks finished per run"):
        mem.add_column(column, justify="left" if column == "database" else "right")
    for case in memory["cases"].values():
        mem.add_row(
            f"{case['waiting']:,} waiting",
            f"{case['rss_mib_median']:.1f}",
            f"{median(case['wall_s']):.2f}",
            ", ".join(map(str, case["finished"])),
        )
    console.print(mem)

    at = f"at {n_large:,} < {LIST_TARGET_MS:.0f} ms"
    last = by_key[-1]
    targets = [("list_tasks(limit=50) " + at, last["list"]["median_ms"])]
    for key in ("list", "list_failed", "list_queue", "list_name"):
        option = last[key]["label"].removeprefix("list_tasks").removesuffix("(limit=50)")
        total = last[key]["median_ms"] + last[key.replace("list", "count")]["median_ms"]
        targets.append((f"`bgtaskex list{option}` in-process (list + count) {at}", total))
    tt = Table(title="Targets", title_justify="left")
    for column in ("target", "measured", "met"):
        tt.add_column(column, justify="left" if column == "target" else "right")
    for label, value in targets:
        tt.add_row(label, f"{value:.1f} ms", "yes" if value < LIST_TARGET_MS else "[red]NO[/red]")
    tt.add_row(
        f"peak RSS of run-once, {memory['waiting_tasks']:,} / {FEW_WAITING} waiting "
        f"<= {RSS_TARGET_RATIO}x",
        f"{memory['ratio']:.2f}x",
        "yes" if memory["met"] else "[red]NO[/red]",
    )
    console.print(tt)
    if n_large < 1_000_000:
        console.print(f"[dim]quick mode: targets checked at {n_large:,} tasks, not 10^6[/dim]")
    return {
        "scaling": rows,
        "targets": [
            {"target": label, "ms": value, "met": value < LIST_TARGET_MS}
            for label, value in targets
        ],
        "rss_ratio": memory["ratio"],
    }
