"""`python -m bench [--quick] [--only NAME] [--postgres-url URL]` (see bench/README.md)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console

from . import DEFAULT_POSTGRES_URL, RESULTS_DIR, BenchError, environment

BENCHMARKS = [
    "startup",
    "throughput",
    "peers",
    "checkpoint",
    "deadline",
    "queuesize",
    "scale",
    "retention",
    "workers",
    "memory",
    "showpage",
    "webpage",
    "chain",
    "daemon",
]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="Benchmarks of bgtaskex (see bench/README.md)."
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer runs")
    parser.add_argument(
        "--only",
        choices=BENCHMARKS,
        help="run one benchmark (default: all, in this order: %(choices)s)",
    )
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES_URL,
        metavar="URL",
        help="SQLAlchemy URL of a PostgreSQL server to create scratch schemas and databases in "
        "(default: $BGTASKEX_TEST_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    parser.add_argument(
        "--runs",
        type=_positive,
        help="start-up: timed rounds (21; quick 5); webpage: runs (21; quick 7)",
    )
    parser.add_argument(
        "--tasks",
        type=_positive,
        help="throughput, peers: single-action tasks (10000; quick 2000)",
    )
    parser.add_argument(
        "--multi-tasks",
        type=_positive,
        help="throughput, peers: 10-action tasks (1000; quick 200)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=1,
        help="throughput, peers, workers: alternating rounds (1)",
    )
    parser.add_argument(
        "--checkpoints",
        type=_positive,
        help="checkpoint: chunks, each followed by a checkpoint (10000; quick 2000)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="throughput: also cProfile one SQLite drain"
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="scale, webpage: rebuild the kept databases (bench/results/scale-cache/, "
        "webpage-cache/, the webpage PostgreSQL schema)",
    )
    parser.add_argument(
        "--tickets",
        type=_positive,
        help="retention: tickets in the application database (100000; quick 20000)",
    )
    parser.add_argument(
        "--repeats",
        type=_positive,
        help="retention: alternating plain/bgtaskex pairs per chunk size (3; quick 2)",
    )
    parser.add_argument(
        "--mariadb-url",
        metavar="URL",
        help="webpage: also on this MariaDB server (scratch databases; default: not measured)",
    )
    parser.add_argument(
        "--output", metavar="FILE", help="JSON result file (default: bench/results/)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console(highlight=False)
    if not console.is_terminal:  # piped or redirected: do not wrap the tables at 80 columns
        console.width = 180
    began = time.monotonic()
    stamp = datetime.now(UTC)
    result: dict[str, object] = {
        "started_at": stamp.isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "args": vars(args),
        "environment": environment(),
    }
    if args.output:
        path = Path(args.output)
    else:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"{stamp:%Y%m%dT%H%M%SZ}-{result['mode']}.json"
    console.print(
        f"bgtaskex benchmarks ({result['mode']}), commit "
        f"{str(result['environment']['git_commit'])[:10]}"  # type: ignore[index]
    )
    try:
        if args.only in (None, "startup"):
            from . import startup

            result["startup"] = startup.run(console, quick=args.quick, runs=args.runs)
        if args.only in (None, "throughput"):
            from . import throughput

            result["throughput"] = throughput.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
                tasks=args.tasks,
                multi_tasks=args.multi_tasks,
                rounds=args.rounds,
                with_profile=args.profile,
            )
        if args.only in (None, "peers"):
            from . import peers

            result["peers"] = peers.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
                tasks=args.tasks,
                multi_tasks=args.multi_tasks,
                rounds=args.rounds,
            )
        if args.only in (None, "checkpoint"):
            from . import checkpoint

            result["checkpoint"] = checkpoint.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
                chunks=args.checkpoints,
            )
        if args.only in (None, "deadline"):
            from . import deadline

            result["deadline"] = deadline.run(console, quick=args.quick)
        if args.only in (None, "queuesize"):
            from . import queuesize

            result["queuesize"] = queuesize.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
                png_path=path.with_name(path.stem + "-queuesize.png"),
            )
        if args.only in (None, "scale"):
            from . import scale

            result["scale"] = scale.run(console, quick=args.quick, rebuild=args.rebuild)
        if args.only in (None, "retention"):
            from . import retention

            result["retention"] = retention.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
                tickets=args.tickets,
                repeats=args.repeats,
            )
        if args.only == "memory":  # run by `peers` too, for its targets table
            from . import memory

            result["memory"] = memory.run(
                console,
                quick=args.quick,
                postgres_url=None if args.no_postgres else args.postgres_url,
            )
        if args.only in (None, "showpage"):
            from . import showpage

            result["showpage"] = showpage.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
            )
        if args.only in (None, "webpage"):
            from . import webpage

            result["webpage"] = webpage.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
                mariadb_url=args.mariadb_url,
                tasks=args.tasks if args.only == "webpage" else None,
                rebuild=args.rebuild,
                runs=args.runs,
            )
        if args.only in (None, "chain"):
            from . import chain

            result["chain"] = chain.run(console, quick=args.quick)
        if args.only in (None, "daemon"):
            from . import daemon

            result["daemon"] = daemon.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
            )
        if args.only in (None, "workers"):
            from . import workers

            result["workers"] = workers.run(
                console,
                quick=args.quick,
                postgres_url=args.postgres_url,
                use_postgres=not args.no_postgres,
                rounds=args.rounds,
            )
    except BenchError as err:
        console.print(f"[red]benchmark invalid:[/red] {err}")
        return 1
    result["elapsed_s"] = time.monotonic() - began
    result["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    console.print(f"total {result['elapsed_s']:.1f}s; results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
