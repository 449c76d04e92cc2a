"""The storage layer's idle probe: is there work in the embedded SQLite database?

Cron runs `bgtaskex run-once` every minute, mostly to find nothing to do. When this probe
can tell for sure that no task is due (and no ended task has outlived `keep_ended`), the
run ends without importing SQLAlchemy. Its queries are the store's own (the due tasks
of `Store.next_task` for a routing, without the lease; the ended tasks of
`Store.purge_expired`), written here as SQL text and sent with the standard library's
sqlite3: every query bgtaskex sends still lives in the storage layer, this module being
part of it. `sqlite_may_hold_schema` is the same kind of look (does a file hold
bgtaskex's tables at all?); the schema revision constants live here because the idle
check needs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from ..urls import sqlite_path

if TYPE_CHECKING:
    from ..plan import Routing

#: A run record still "running" this long after its start is not a run going on (the
#: retention of run records keeps such a row that long at least).
DEAD_AFTER = 86400.0
#: The Alembic revision this release's code expects (tests check it is the script head).
HEAD_REVISION = "0006"
#: Where bgtaskex keeps its Alembic revision: a table of its own, so that an application
#: using Alembic in the same database keeps its `alembic_version`.
VERSION_TABLE = "bgtaskex_alembic_version"
#: Earlier releases kept it in Alembic's default table; these are the revisions they
#: wrote there (see migrate.adopt_legacy_version).
LEGACY_VERSION_TABLE = "alembic_version"
LEGACY_REVISIONS = frozenset({"0001", "0002"})


def sqlite_idle(
    url: str,
    keep_ended: Mapping[str, float] | None = None,
    routing: Routing | None = None,
) -> bool:
    """True only when the database of `url` is an SQLite file, at this release's schema,
    with no task due in the queues `routing` serves (None: any) and no ended task past
    its `keep_ended` (seconds, by status: what `Store.purge_expired` would delete).
    False means "there is work" or "cannot tell": do the full run."""
    return sqlite_idle_until(url, keep_ended, routing)[0]


def sqlite_idle_until(
    url: str,
    keep_ended: Mapping[str, float] | None = None,
    routing: Routing | None = None,
) -> tuple[bool, datetime | None]:
    """`sqlite_idle`, and when idle, when the next task of those queues becomes due (its
    not_before: delayed, snoozed, backed off), None when no task waits."""
    path = sqlite_path(url)
    if path is None:
        return False, None
    if not path.exists():
        return True, None  # no database yet, so no task either
    import sqlite3

    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return False, None
    try:
        version = conn.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()
        if version is None or version[0] != HEAD_REVISION:
            return False, None
        now = datetime.now(UTC)
        query, args = _waiting_query("1", routing)
        # Timestamps are stored as naive UTC text, which sorts as time does.
        query += " AND (not_before IS NULL OR not_before <= ?) LIMIT 1"
        if conn.execute(query, (*args, _stamp(now))).fetchone() is not None:
            return False, None
        for status, seconds in (keep_ended or {}).items():
            cutoff = now - timedelta(seconds=seconds)
            old = conn.execute(
                "SELECT 1 FROM bgtaskex_tasks WHERE status = ? AND ended_at < ? LIMIT 1",
                (str(status), _stamp(cutoff)),
            ).fetchone()
            if old is not None:
                return False, None
        # Run records past their retention are no work: the idle run's own record
        # deletes them (`record_idle_run`). Counted as work, they made every idle
        # run-once a full run with keep_finished = 0 (the last run's row expired).
        # Nothing is due: every waiting task has a not_before ahead (the due index's).
        query, args = _waiting_query("min(not_before)", routing)
        later = conn.execute(query, args).fetchone()[0]
        return True, _parse_stamp(later) if later is not None else None
    except sqlite3.Error:
        return False, None
    finally:
        conn.close()


def _expired_runs(keep: Mapping[str, float], now: datetime) -> list[tuple[str, str]]:
    """The conditions of the run records past their retention (`runs.expired`, as SQL
    text), each with its cutoff."""
    checks: list[tuple[str, datetime]] = []
    if "finished" in keep:
        checks.append(
            ("outcome = 'ok' AND ended_at < ?", now - timedelta(seconds=keep["finished"]))
        )
    if "failed" in keep:
        cutoff = now - timedelta(seconds=keep["failed"])
        checks.append(("outcome NOT IN ('ok', 'running') AND ended_at < ?", cutoff))
        cutoff = now - timedelta(seconds=max(keep["failed"], DEAD_AFTER))
        checks.append(("outcome = 'running' AND started_at < ?", cutoff))
    return [(condition, _stamp(cutoff)) for condition, cutoff in checks]


def record_idle_run(
    url: str, row: Mapping[str, object], keep_ended: Mapping[str, float] | None = None
) -> bool:
    """Record a run-once that `sqlite_idle_until` found idle (no lock taken, no task
    touched) as an ok run: one INSERT of `row` (the columns of `runs.start_values`,
    plus ended_at) into the SQLite file of `url`, with the standard library, in one
    transaction with the DELETE of the run records past `keep_ended` (the retention a
    full run applies, `runs.expired`). Best effort: False when it could not be written
    (the run itself was fine)."""
    path = sqlite_path(url)
    if path is None or not path.exists():
        return False
    import sqlite3

    values = {k: _stamp(v) if isinstance(v, datetime) else v for k, v in row.items()}
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=5)
    except sqlite3.Error:
        return False
    try:
        with conn:  # one transaction, committed
            now = datetime.now(UTC)
            for condition, cutoff in _expired_runs(keep_ended or {}, now):
                conn.execute(f"DELETE FROM bgtaskex_runs WHERE {condition}", (cutoff,))
            conn.execute(
                f"INSERT INTO bgtaskex_runs ({names}) VALUES ({marks})", tuple(values.values())
            )
        return True
    except sqlite3.Error:
        return False
    finally:
        conn.close()


def _stamp(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _parse_stamp(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _waiting_query(what: str, routing: Routing | None) -> tuple[str, tuple[str, ...]]:
    """SELECT `what` of the waiting tasks in the queues `routing` serves and no
    operator paused (as the due query of `Store.next_task` narrows them): the SQL, open
    to more conditions, and its arguments."""
    query = (
        f"SELECT {what} FROM bgtaskex_tasks WHERE run_order IS NOT NULL"
        " AND queue NOT IN (SELECT queue FROM bgtaskex_queue_pauses)"
    )
    queues = routing.queues if routing is not None else None
    excluded = routing.excluded if routing is not None else ()
    if queues is not None:
        query += f" AND queue IN ({', '.join('?' * len(queues))})"
    if excluded:
        query += f" AND queue NOT IN ({', '.join('?' * len(excluded))})"
    return query, (*(queues or ()), *excluded)


def sqlite_may_hold_schema(url: str) -> bool:
    """False when `url` is an SQLite file that surely has no bgtaskex schema: missing (a
    connection would create it), or without bgtaskex's tables (an application's file,
    which a connection would switch to WAL). Looked at read-only; anything unclear is
    True (the store then says what is wrong)."""
    path = sqlite_path(url)
    if path is None:
        return True
    if not path.exists():
        return False
    import sqlite3

    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error:
        return True
    try:
        query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'bgtaskex_tasks'"
        return conn.execute(query).fetchone() is not None
    except sqlite3.Error:
        return True
    finally:
        conn.close()
