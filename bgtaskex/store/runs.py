"""The record of runs (`bgtaskex runs`, `check`, Prometheus): one row per run that took
its lock, written as it starts and again as it ends.

`Runs` is composed by `Store` as `store.runs`, on the store's transactions. Each public
method is one transaction (`purge_expired`: one per batch).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, and_, delete, func, insert, or_, select, update

from .. import tables as t
from ..models import RUN_COUNTS, RunRecord, RunStart, RunSummary
from .engine import now as _now
from .probe import DEAD_AFTER

if TYPE_CHECKING:
    from .core import Store

#: The counts a run's end writes, from its RunSummary.
COUNTS = (*RUN_COUNTS, "purged")


def run_record(row: Row[Any]) -> RunRecord:
    """A row of bgtaskex_runs as a RunRecord."""
    values = row._mapping
    return RunRecord(**{f.name: values[f.name] for f in fields(RunRecord)})


def start_values(start: RunStart) -> dict[str, Any]:
    """The columns of the row `start` records (outcome "running")."""
    return {
        "run_id": start.run_id,
        "process": start.process,
        "holder": start.holder[:100],
        "host": start.host[:255],
        "pid": start.pid,
        "lock": start.lock,
        "started_at": start.started_at,
        "budget": start.budget,
        "outcome": "running",
    }


def expired(keep: Mapping[str, float], now: datetime) -> Any:
    """The condition of the run rows past their retention: ok runs after `keep`'s
    "finished" seconds, the others (failed, storage, died, refused) after its "failed" seconds
    (those absent: kept forever). A row still "running" (its run died) counts from
    its start, and is kept a day at least."""
    found = []
    if "finished" in keep:
        cutoff = now - timedelta(seconds=keep["finished"])
        found.append(and_(t.runs.c.outcome == "ok", t.runs.c.ended_at < cutoff))
    if "failed" in keep:
        cutoff = now - timedelta(seconds=keep["failed"])
        others = and_(t.runs.c.outcome != "ok", t.runs.c.outcome != "running")
        found.append(and_(others, t.runs.c.ended_at < cutoff))
        # Not the runs going on now: a row left "running" goes a day at the earliest.
        cutoff = now - timedelta(seconds=max(keep["failed"], DEAD_AFTER))
        found.append(and_(t.runs.c.outcome == "running", t.runs.c.started_at < cutoff))
    return or_(*found) if found else None


class Runs:
    """The record of runs of one `Store` (its `runs`)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def start(self, start: RunStart) -> int:
        """Record a run as it starts (outcome "running"); returns its row's id."""
        with self._store._write() as conn:
            result = conn.execute(insert(t.runs).values(start_values(start)))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def refused(self, start: RunStart, error: str) -> int:
        """Record a run that refused to start: one row, outcome "refused", ended as it
        is written, with the (masked) error; returns its row's id."""
        values = start_values(start)
        values.update(outcome="refused", ended_at=_now(), error=error)
        with self._store._write() as conn:
            result = conn.execute(insert(t.runs).values(values))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def killed(self, run_id: str, error: str) -> None:
        """Record the run `run_id` killed by its own hard limit: outcome "died", ended
        now, with `error` (why); only while its row still says "running"."""
        c = t.runs.c
        values = {"outcome": "died", "ended_at": _now(), "error": error[:2000]}
        with self._store._write() as conn:
            conn.execute(
                update(t.runs).where(c.run_id == run_id, c.outcome == "running").values(values)
            )

    def end(self, row_id: int, outcome: str, summary: RunSummary, error: str | None) -> None:
        """Record the end of the run of row `row_id`: its outcome, counts, largest
        overrun and the (masked) error that ended it."""
        values: dict[str, Any] = {name: getattr(summary, name) for name in COUNTS}
        values.update(
            ended_at=_now(), outcome=outcome, max_overrun=summary.max_overrun, error=error
        )
        with self._store._write() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id == row_id).values(values))

    def recent(
        self, *, limit: int = 20, process: str | None = None, not_ok: bool = False
    ) -> list[RunRecord]:
        """The latest `limit` runs, newest first; only those of `process`, and with
        `not_ok` only those whose outcome is not "ok" (running ones included)."""
        c = t.runs.c
        query = select(t.runs).order_by(c.started_at.desc(), c.id.desc()).limit(max(0, limit))
        if process is not None:
            query = query.where(c.process == process)
        if not_ok:
            query = query.where(c.outcome != "ok")
        with self._store._read(single=True) as conn:
            return [run_record(row) for row in conn.execute(query)]

    def last_ok_end(self) -> datetime | None:
        """When the last run that ended "ok" ended; None when none did (or is kept)."""
        c = t.runs.c
        with self._store._read(single=True) as conn:
            return conn.execute(select(func.max(c.ended_at)).where(c.outcome == "ok")).scalar()

    def last_ok_ends(self) -> dict[str | None, datetime]:
        """When the last run that ended "ok" ended, per process (None: plain runs);
        a process none of whose kept runs ended ok is absent."""
        c = t.runs.c
        query = select(c.process, func.max(c.ended_at)).where(c.outcome == "ok")
        with self._store._read(single=True) as conn:
            rows = conn.execute(query.group_by(c.process)).all()
        return {process: ended for process, ended in rows if ended is not None}

    def latest_each(self) -> list[RunRecord]:
        """The latest recorded run (the highest id: rows are written as runs start) of
        each process, plain runs (process None) included."""
        c = t.runs.c
        latest = select(func.max(c.id)).group_by(c.process)
        with self._store._read(single=True) as conn:
            rows = conn.execute(select(t.runs).where(c.id.in_(latest))).all()
        return [run_record(row) for row in rows]

    def outcomes(self) -> tuple[dict[str, int], list[RunRecord]]:
        """How many rows are kept per stored outcome, and the rows still "running"
        (for the reader to tell the live from the dead)."""
        c = t.runs.c
        with self._store._read() as conn:
            counts = conn.execute(select(c.outcome, func.count()).group_by(c.outcome)).all()
            going = conn.execute(select(t.runs).where(c.outcome == "running")).all()
        return {str(o): int(n) for o, n in counts}, [run_record(row) for row in going]

    def failed_tasks_since(self, since: datetime, limit: int = 10) -> tuple[int, list[int]]:
        """Tasks that ended failed at or after `since`: (count, the latest ids)."""
        c = t.tasks.c
        cond = (c.status == "failed", c.ended_at >= since)
        with self._store._read() as conn:
            count = conn.execute(select(func.count()).select_from(t.tasks).where(*cond))
            total = int(count.scalar_one())
            ids = conn.execute(select(c.id).where(*cond).order_by(c.id.desc()).limit(limit))
            return total, list(ids.scalars())

    def purge_expired(self, keep: Mapping[str, float], *, deadline: float, batch: int = 500) -> int:
        """Delete the run rows past their retention (`expired`), `batch` per
        transaction, until none is left or `deadline` (a time.time() stamp) passes."""
        c = t.runs.c
        purged = 0
        while time.time() < deadline:
            cond = expired(keep, _now())
            if cond is None:
                break
            with self._store._write() as conn:
                ids = list(conn.execute(select(c.id).where(cond).limit(batch)).scalars())
                if ids:
                    conn.execute(delete(t.runs).where(c.id.in_(ids)))
            purged += len(ids)
            if len(ids) < batch:
                break
        return purged
