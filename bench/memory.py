"""Peak memory of a run by the number of tasks it drains (issue #17): the peak RSS of
`bgtaskex run-once` (a subprocess, its own `ru_maxrss`, see `rss.peak_rss`) draining
10 no-op single-action tasks (`bench.throughput:Noop`) against one draining 100,000
(quick: 20,000), on SQLite FULL (the default), the two alternating. The target: at most
1.2x. Optionally the same on a scratch PostgreSQL database.

Each run drains a fresh database: one task is enqueued through the client, then its rows
(task, action, event) are copied N-1 times in one INSERT ... SELECT each, durability off
(SQLite `synchronous=OFF`, PostgreSQL `synchronous_commit=off`), then `os.sync()`. The
copies differ only in id and name, as N enqueues of the same action would. The run gets
an hour of budget and must finish all N tasks.

What differs between the two on SQLite is SQLite's page cache (`cache_size`, 2 MiB per
connection by default), bounded: the larger run fills it in its first second (the start
reads every waiting task's row for live leases, `reap_dead_claims`), and the RSS stays
flat after that, the Python heap included.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from . import ROOT, BenchError, masked, median
from .rss import peak_rss
from .scratch import postgres_problem, postgres_schema, sqlite_dir, with_options
from .throughput import NOOP_REF

SMALL = 10
LARGE_FULL, LARGE_QUICK = 100_000, 20_000
ROUNDS_FULL, ROUNDS_QUICK = 3, 1
TARGET_RATIO = 1.2
BUDGET_S = 3600


def fill(url: str, tasks: int) -> None:
    """`tasks` waiting tasks of one Noop action each, on the empty database at `url`
    (already with durability off): one enqueued, its rows copied."""
    import sqlalchemy as sa

    from bgtaskex.client import connect
    from bgtaskex.config import Settings

    with connect(settings=Settings(database_url=url, sqlite_synchronous="OFF")) as client:
        first = client.enqueue("bench-0", [NOOP_REF])
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA synchronous=OFF")
            _copy_rows(conn, first, tasks - 1)
    finally:
        engine.dispose()
    os.sync()


def _copy_rows(conn: Any, first: int, copies: int) -> None:
    """Copies of task `first` named bench-1 .. bench-`copies`, with its action and events."""
    import sqlalchemy as sa

    columns = {
        table: [c["name"] for c in sa.inspect(conn).get_columns(table) if c["name"] != "id"]
        for table in ("bgtaskex_tasks", "bgtaskex_actions", "bgtaskex_events")
    }
    task_cols = columns["bgtaskex_tasks"]
    picked = ", ".join("'bench-' || n.i" if c == "name" else f"t.{c}" for c in task_cols)
    conn.execute(
        sa.text(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :copies) "
            f"INSERT INTO bgtaskex_tasks ({', '.join(task_cols)}) "
            f"SELECT {picked} FROM bgtaskex_tasks t, n WHERE t.id = :first ORDER BY n.i"
        ),
        {"copies": copies, "first": first},
    )
    for table in ("bgtaskex_actions", "bgtaskex_events"):
        cols = columns[table]
        picked = ", ".join("c.id" if col == "task_id" else f"r.{col}" for col in cols)
        conn.execute(
            sa.text(
                f"INSERT INTO {table} ({', '.join(cols)}) SELECT {picked} "
                f"FROM {table} r, bgtaskex_tasks c WHERE r.task_id = :first AND c.id <> :first "
                "ORDER BY c.id, r.id"
            ),
            {"first": first},
        )
    waiting = conn.execute(sa.text("SELECT count(*) FROM bgtaskex_actions")).scalar_one()
    if waiting != copies + 1:
        raise BenchError(f"fill: {waiting} actions, expected {copies + 1}")


@contextlib.contextmanager
def _database(kind: str, workdir: Path, pg_url: str) -> Iterator[tuple[str, str]]:
    """(the run's URL, the fill's URL: durability off) of a new empty database."""
    if kind == "sqlite":
        with sqlite_dir(workdir, "memory") as where:
            url = f"sqlite:///{where / 'bgtaskex.db'}"
            yield url, url
        return
    with postgres_schema(pg_url, "bgtaskex_memory") as schema:
        url = with_options(pg_url, f"search_path={schema}")
        yield url, with_options(pg_url, f"search_path={schema}", "synchronous_commit=off")


def drain(kind: str, tasks: int, workdir: Path, pg_url: str) -> dict[str, Any]:
    """Peak RSS (KiB) and wall time of one `bgtaskex run-once` draining `tasks` tasks."""
    from .startup import _bgtaskex_argv, _clean_env

    with _database(kind, workdir, pg_url) as (url, fill_url):
        fill(fill_url, tasks)
        env = _clean_env(workdir / "home")
        env["PYTHONPATH"] = str(ROOT)  # bench.throughput:Noop
        command = [*_bgtaskex_argv(), "--database-url", url, "--import", "bench.throughput"]
        command += ["run-once"]
        command += ["--max-execution-time", str(BUDGET_S), "--json"]
        rss, wall, stdout = peak_rss(command, env, workdir)
    report = json.loads(stdout.strip().splitlines()[-1])
    if report.get("finished") != tasks or report.get("failed") or report.get("errored"):
        raise BenchError(f"run-once of {tasks} tasks ({kind}): {stdout.strip()[:300]}")
    return {"rss_kib": rss, "wall_s": wall}


def measure(kind: str, large: int, rounds: int, workdir: Path, pg_url: str) -> dict[str, Any]:
    """Peak RSS of runs draining SMALL and `large` tasks, alternating, and their ratio."""
    cases: dict[str, dict[str, Any]] = {
        key: {"tasks": n, "rss_kib": [], "wall_s": []}
        for key, n in (("small", SMALL), ("large", large))
    }
    order = list(cases)
    for r in range(rounds):
        for key in order if r % 2 == 0 else order[::-1]:
            sample = drain(kind, cases[key]["tasks"], workdir, pg_url)
            cases[key]["rss_kib"].append(sample["rss_kib"])
            cases[key]["wall_s"].append(sample["wall_s"])
    for case in cases.values():
        case["rss_mib_median"] = median(case["rss_kib"]) / 1024
    ratio = cases["large"]["rss_mib_median"] / cases["small"]["rss_mib_median"]
    return {"cases": cases, "ratio": ratio, "met": ratio <= TARGET_RATIO}


def target_label(large: int) -> str:
    return f"peak memory of a run draining {large:,} tasks: at most {TARGET_RATIO}x that of {SMALL}"


def run(
    console: Console, quick: bool = False, *, postgres_url: str | None = None
) -> dict[str, Any]:
    """The benchmark: SQLite FULL always, PostgreSQL when `postgres_url` answers."""
    large = LARGE_QUICK if quick else LARGE_FULL
    rounds = ROUNDS_QUICK if quick else ROUNDS_FULL
    kinds = ["sqlite"]
    skipped = postgres_problem(postgres_url) if postgres_url else "not asked"
    if postgres_url and skipped is None:
        kinds.append("postgres")
    console.rule(f"memory: peak RSS of run-once draining {SMALL} vs {large:,} tasks")
    result: dict[str, Any] = {
        "small": SMALL,
        "large": large,
        "quick": quick,
        "rounds": rounds,
        "postgres_skipped": skipped,
        "postgres_url": masked(postgres_url) if postgres_url else None,
    }
    with tempfile.TemporaryDirectory(prefix="bgtaskex-bench-memory-") as tmp:
        for kind in kinds:
            result[kind] = measure(kind, large, rounds, Path(tmp), postgres_url or "")
    table = Table("database", "tasks", "peak RSS (median)", "samples", "run wall")
    for kind in kinds:
        for case in result[kind]["cases"].values():
            table.add_row(
                "SQLite FULL" if kind == "sqlite" else "PostgreSQL",
                f"{case['tasks']:,}",
                f"{case['rss_mib_median']:.1f} MiB",
                " ".join(f"{k / 1024:.1f}" for k in case["rss_kib"]),
                f"{median(case['wall_s']):.1f}s",
            )
    console.print(table)
    label = target_label(large) + (" (quick: not the issue's 100,000)" if quick else "")
    result["targets"] = [
        {"target": label, "measured": result["sqlite"]["ratio"], "met": result["sqlite"]["met"]}
    ]
    for kind in kinds:
        found = result[kind]
        verdict = "met" if found["met"] else "MISSED"
        name = "SQLite FULL" if kind == "sqlite" else "PostgreSQL"
        console.print(f"{name}: {label}: {found['ratio']:.2f}x, {verdict}")
    return result


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets this benchmark measures (only SQLite's counts)."""
    return list(result["targets"])
