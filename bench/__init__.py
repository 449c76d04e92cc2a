"""Benchmarks of bgtaskex, run by hand: `python -m bench [--quick]` (see bench/README.md).

Never collected by the test suite. Each benchmark alternates the things it compares within
one invocation and reports medians and ratios, since absolute times on a shared machine say
little on their own.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_POSTGRES_URL = os.environ.get(
    "BGTASKEX_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

T = TypeVar("T")


class BenchError(Exception):
    """The benchmark could not measure what it claims to (wrong path taken, bad exit)."""


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def quartiles(values: Sequence[float]) -> tuple[float, float]:
    """The 25th and 75th percentiles (both the value itself for a single sample)."""
    if len(values) < 2:
        return float(values[0]), float(values[0])
    q = statistics.quantiles(values, n=4, method="inclusive")
    return float(q[0]), float(q[2])


def rotated(items: Sequence[T], by: int) -> list[T]:
    """`items` rotated left by `by`: round r of an alternating benchmark starts with
    a different item, so no item always runs first (cold) or last."""
    if not items:
        return []
    by %= len(items)
    return [*items[by:], *items[:by]]


def pg_conninfo(url: str) -> str:
    """A libpq URI for plain psycopg from a SQLAlchemy URL (drops `+driver`)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def masked(url: str) -> str:
    from bgtaskex.urls import mask_secrets

    return mask_secrets(url)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def environment() -> dict[str, Any]:
    """What the numbers depend on, stored with them."""
    import sqlite3

    import sqlalchemy

    status = _git("status", "--porcelain", "--", "bgtaskex")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "bgtaskex_dirty": bool(status) if status is not None else None,
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
    }
