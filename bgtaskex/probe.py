"""A cheap look at the embedded SQLite database, with the standard library only.

Cron runs `bgtaskex run-once` every minute, mostly to find nothing to do. When this probe
can tell for sure that no task is due, the run ends without importing SQLAlchemy.
"""

from __future__ import annotations

from .urls import sqlite_path

#: The Alembic revision this release's code expects (tests check it is the script head).
HEAD_REVISION = "0001"


def sqlite_idle(url: str) -> bool:
    """True only when the database of `url` is an SQLite file, at this release's schema,
    with no task due. False means "something is due" or "cannot tell": do the full run."""
    path = sqlite_path(url)
    if path is None:
        return False
    if not path.exists():
        return True  # no database yet, so no task either
    import sqlite3

    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        version = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        if version is None or version[0] != HEAD_REVISION:
            return False
        due = conn.execute(
            "SELECT 1 FROM bgtaskex_tasks WHERE run_order IS NOT NULL LIMIT 1"
        ).fetchone()
        return due is None
    except sqlite3.Error:
        return False
    finally:
        conn.close()
