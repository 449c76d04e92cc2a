"""A cheap look at the embedded SQLite database, with the standard library only.

Cron runs `bgtaskex run-once` every minute, mostly to find nothing to do. When this probe
can tell for sure that no task is due, the run ends without importing SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

from ..urls import sqlite_path

#: The Alembic revision this release's code expects (tests check it is the script head).
HEAD_REVISION = "0002"
#: Where bgtaskex keeps its Alembic revision: a table of its own, so that an application
#: using Alembic in the same database keeps its `alembic_version`.
VERSION_TABLE = "bgtaskex_alembic_version"
#: Earlier releases kept it in Alembic's default table; these are the revisions they
#: wrote there (see migrate.adopt_legacy_version).
LEGACY_VERSION_TABLE = "alembic_version"
LEGACY_REVISIONS = frozenset({"0001", "0002"})


def sqlite_idle(
    url: str,
    retention: Mapping[str, float] | None = None,
    queues: Sequence[str] | None = None,
    exclude_queues: Sequence[str] = (),
) -> bool:
    """True only when the database of `url` is an SQLite file, at this release's schema,
    with no task due and no ended task past its `retention` (seconds, by status).
    False means "there is work" or "cannot tell": do the full run."""
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
        version = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
        if version is None or version[0] != HEAD_REVISION:
            return False
        query = "SELECT 1 FROM bgtaskex_tasks WHERE run_order IS NOT NULL"
        if queues is not None:
            query += f" AND queue IN ({', '.join('?' * len(queues))})"
        if exclude_queues:
            query += f" AND queue NOT IN ({', '.join('?' * len(exclude_queues))})"
        args = (*(queues or ()), *exclude_queues)
        due = conn.execute(query + " LIMIT 1", args).fetchone()
        if due is not None:
            return False
        for status, seconds in (retention or {}).items():
            # Timestamps are stored as naive UTC text, which sorts as time does.
            cutoff = datetime.now(UTC) - timedelta(seconds=seconds)
            old = conn.execute(
                "SELECT 1 FROM bgtaskex_tasks WHERE status = ? AND ended_at < ? LIMIT 1",
                (str(status), cutoff.strftime("%Y-%m-%d %H:%M:%S.%f")),
            ).fetchone()
            if old is not None:
                return False
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()
