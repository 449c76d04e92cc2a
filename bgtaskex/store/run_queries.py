"""The run's side of `Store`: what `contract.RunStorage` asks of it beyond its
transactions. The next due task, claims and their leases, the state changes a run
writes, the run's side of a cancel, and the expiry of ended tasks.

`RunQueries` is mixed into `Store` and runs on the store's transactions (`_read`,
`_write`); its statements are in `statements` and `lease_statements`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, update
from sqlalchemy.exc import IntegrityError

from .. import tables as t
from ..exceptions import StorageError
from ..models import TERMINAL, Change, RunStart, RunSummary, Task, TaskFilter
from ..owner import holder_is_gone
from ..plan import Routing
from . import lease_statements as leases
from . import statements as sql
from .engine import now as _now
from .engine import retrying_deadlocks
from .rows import task_of_joined
from .writes import end_as_cancelled, locked_task, refused

if TYPE_CHECKING:
    from .admin import Admin
    from .direct import Direct
    from .runs import Runs


class RunQueries:
    """The run's queries and writes, each one transaction (a mixin of `Store`)."""

    if TYPE_CHECKING:  # given by Store
        admin: Admin
        runs: Runs
        _direct: Direct
        routine_events: bool

        @property
        def dialect(self) -> str: ...

        def _read(self, *, single: bool = False) -> AbstractContextManager[Connection]: ...

        def _write(self) -> AbstractContextManager[Connection]: ...

        def _single_write(self) -> AbstractContextManager[Connection]: ...

    def next_task(
        self,
        *,
        skip_run: str | None = None,
        skip_task: int | None = None,
        exclude: Collection[int] = (),
        routing: Routing | None = None,
    ) -> Task | None:
        """The task the run should process next (see `models.run_order`), with its
        actions, from the queues `routing` serves (None: any) that no operator paused
        (read by this very query: `lease_statements.not_paused`). Tasks last written by
        run `skip_run` (already handled by it), `skip_task` (handled, not yet written)
        and those in `exclude` are passed over, and so are tasks that another run holds
        under a live lease (it is executing them)."""
        first = sql.next_task_id(self.dialect)
        due = sql.narrowed(first, exclude, routing)
        params = self._lease_params(0.0)
        params.update(v_skip_run=skip_run or "", v_skip_task=-1 if skip_task is None else skip_task)
        cached = due is first
        query = sql.next_task_of(self.dialect) if cached else sql.next_task(due)
        with self._read(single=True) as conn:
            return task_of_joined(self._rows(conn, query, params, cached))

    def claim(
        self,
        worker: str,
        run_id: str,
        lease: float,
        *,
        exclude: Collection[int] = (),
        routing: Routing | None = None,
    ) -> Task | None:
        """Claim the next due task for `worker`, in one short transaction, and return it
        with its new `claim_token`; None when no task is free.

        A task is free when no lease holds it: never claimed, released, or its lease
        (`lease` seconds from the claim, extended by `heartbeat`) has run out, which is
        how a dead worker's task is taken over. Rows that another worker is claiming at
        the same instant are skipped (SKIP LOCKED), not waited for. The order, the
        routing and the paused queues are the run's (`next_task`), and run `run_id` does
        not take a task twice.
        """
        due, claim, _beat = leases.claim_statements(self.dialect)
        narrowed = sql.narrowed(due, exclude, routing)
        cached = narrowed is due  # prepared once; one narrowed per call is not
        in_one = leases.claim_in_one(self.dialect, narrowed)
        params = self._lease_params(lease)
        params.update(v_skip_run=run_id, v_worker=worker[:100])
        if in_one is not None and cached:
            # One statement, a transaction of its own: one round trip.
            with self._single_write() as conn:
                return task_of_joined(self._direct.execute(conn, in_one, params))
        with self._write() as conn:
            if in_one is not None:
                return task_of_joined(conn.execute(in_one, params).all())
            found = self._rows(conn, narrowed, params, cached)
            if not found:
                return None
            params["v_task_id"] = found[0][0]
            self._direct.rowcount(conn, claim, params)
            return task_of_joined(self._direct.execute(conn, sql.TASK_BY_ID, params))

    def _rows(self, conn: Connection, query: Any, params: dict[str, Any], cached: bool) -> Any:
        """The rows of `query`: sent on the cursor when it is a cached statement."""
        if cached:
            return self._direct.execute(conn, query, params)
        return conn.execute(query, params).all()

    def heartbeat(self, task_id: int, token: int, lease: float) -> bool:
        """Extend the lease of a claimed task to `lease` seconds from now; False when the
        claim is lost (another worker claimed the task since: nothing was written)."""
        beat = leases.claim_statements(self.dialect)[2]
        params = self._lease_params(lease)
        params.update(v_task_id=task_id, v_token=token)
        with self._write() as conn:
            return self._direct.rowcount(conn, beat, params) == 1

    def release(self, task_id: int, token: int) -> None:
        """End a claim without any other write (the task may be claimed again at once);
        nothing happens if another worker claimed the task since."""
        with self._write() as conn:
            self._direct.rowcount(conn, leases.RELEASE, {"v_task_id": task_id, "v_token": token})

    def reap_dead_claims(self) -> list[int]:
        """End the live claims held by programs on this host that are certainly dead
        (killed with SIGKILL, say: see `owner.holder_is_gone`), so that their tasks are
        recovered at once instead of when the lease runs out; returns their ids. A read,
        and a write only when there is a claim to end."""
        params = self._lease_params(0.0)
        with self._read(single=True) as conn:
            held = conn.execute(leases.leases_held(self.dialect), params).all()
        dead = [row for row in held if holder_is_gone(row.claimed_by)]
        if dead:
            with self._write() as conn:
                for row in dead:
                    conn.execute(leases.RELEASE, {"v_task_id": row.id, "v_token": row.claim_token})
        return [row.id for row in dead]

    def _lease_params(self, lease: float) -> dict[str, Any]:
        return leases.lease_params(self.dialect, lease, _now())

    def queue_paused(self, queue: str) -> bool:
        """Whether an operator paused `queue` (one primary-key read)."""
        with self._read(single=True) as conn:
            return conn.execute(leases.PAUSE_OF, {"v_queue": queue}).first() is not None

    def has_due_tasks(self) -> bool:
        """Whether any task of a queue not paused is due (not ended, and not delayed to
        later), whoever holds it."""
        with self._read() as conn:
            due = conn.execute(sql.has_due(self.dialect), self._lease_params(0.0))
            return due.first() is not None

    def next_due_at(self, routing: Routing | None = None) -> datetime | None:
        """When the next task that waits for its not_before becomes due, in the queues
        `routing` serves (None: any) and no operator paused; None when no task waits for
        its time."""
        query = sql.narrowed(sql.next_due_at(self.dialect), (), routing)
        with self._read(single=True) as conn:
            return conn.execute(query, self._lease_params(0.0)).scalar()

    def apply(self, *changes: Change) -> None:
        """Write state changes of tasks (status, actions, events) in one transaction;
        with `history = "failures"`, their routine events (`NewEvent.routine`) are left out.

        Each write only happens while its task is neither ended nor asked to cancel;
        otherwise nothing at all is written and TaskInterrupted names the first such
        task, so a run never overwrites a `bgtaskex cancel`. A transaction lost to a
        deadlock (e.g. with a `cancel`) is tried again.
        """
        retrying_deadlocks(lambda: self._apply(changes))

    def _apply(self, changes: Sequence[Change], one_by_one: bool = False) -> None:
        now, direct = _now(), self._direct
        try:
            with self._write() as conn:  # leases count from when the write lock is held
                writes, guards = self._flush(changes, now)
                checked = {place for place, _ in guards}
                counts = direct.rowcounts(conn, writes, checked, one_by_one=one_by_one)
                for place, change in guards:
                    if counts[place] != 1:
                        raise refused(conn, change)
        except StorageError as err:
            # In one script, the writes after a task's refused write run too: the events'
            # INSERT of a task deleted meanwhile (purged) fails on its foreign key, which
            # one by one is never sent (the refusal comes first). Nothing was written:
            # the flush again, one statement at a time, says which it is.
            if one_by_one or not direct.scripts or not isinstance(err.__cause__, IntegrityError):
                raise
            self._apply(changes, one_by_one=True)

    def _flush(
        self, changes: Sequence[Change], now: datetime
    ) -> tuple[list[tuple[Any, dict[str, Any]]], list[tuple[int, Change]]]:
        """The writes of `changes`, in order, and the place among them of each task's
        write (the one a refusal shows on), with the change it belongs to."""
        writes: list[tuple[Any, dict[str, Any]]] = []
        guards: list[tuple[int, Change]] = []
        events: list[dict[str, Any]] = []
        for change in changes:
            lease = self._lease_params(change.lease) if change.claim_as else {}
            guards.append((len(writes), change))
            writes.append(sql.task_update(change, now, self.dialect, lease))
            for action in change.actions:
                statement, values = sql.action_update(change.task_id, action, now)
                if statement is not None:
                    writes.append((statement, values))
            kept = (e for e in change.events if self.routine_events or not e.routine)
            events.extend(sql.event_row(change.task_id, now, change.run_id, e) for e in kept)
        step = sql.EVENTS_PER_INSERT
        for first in range(0, len(events), step):
            rows = events[first : first + step]
            writes.append((sql.insert_events(len(rows)), sql.events_values(rows)))
        return writes, guards

    def end_cancelled(self, task_id: int, run_id: str, rank: int | None, params: Any) -> None:
        """The run's side of a cancel: end the task, saving the current action's params
        (`rank`, `params`); nothing happens if it has ended already."""
        now = _now()
        with self._write() as conn:
            row = locked_task(conn, task_id)
            if row.status in TERMINAL:
                return
            if rank is not None and params is not None:
                conn.execute(
                    update(t.actions)
                    .where(t.actions.c.task_id == task_id, t.actions.c.rank == rank)
                    .values(params=params)
                )
            end_as_cancelled(conn, task_id, row.status, run_id, now, "cancelled by request")

    def purge_expired(self, keep: Mapping[str, float], *, deadline: float) -> int:
        """Delete bgtaskex's own ended tasks older than `keep` gives for their status
        (seconds; 0: all of them), until `deadline` (a time.time() stamp); returns how
        many went. Not an application's retention rules: those are `builtin.retention`.

        The run records past the same retention go too, uncounted: ok runs as finished
        tasks, the others (failed, storage, died) as failed ones (`runs.expired`)."""
        purged = 0
        for status, seconds in keep.items():
            where = TaskFilter(statuses=frozenset({str(status)}))
            if seconds != 0:
                where = replace(where, ended_before=_now() - timedelta(seconds=seconds))
            purged += self.admin.purge(where, deadline=deadline)
        self.runs.purge_expired(keep, deadline=deadline)
        return purged

    def run_started(self, start: RunStart) -> int:
        """Record a run as it starts, outcome "running"; returns the record's id."""
        return self.runs.start(start)

    def run_killed(self, run_id: str, error: str) -> None:
        """Record run `run_id` as died with `error`, if its record still says running."""
        self.runs.killed(run_id, error)

    def run_ended(
        self, record: int, outcome: str, summary: RunSummary, error: str | None = None
    ) -> None:
        """Record the end of run `record`: `outcome`, the counts of `summary`, the
        masked `error` that ended it."""
        self.runs.end(record, outcome, summary, error)
