"""What the run needs of its storage: the `RunStorage` protocol.

`Store` satisfies it on SQLite, PostgreSQL and MySQL / MariaDB; the contract tests
(tests/integration/test_store_contract.py) check every guarantee written here on all
three. The run layer (bgtaskex.run) asks for nothing else of the store.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

from ..models import Change, RunStart, RunSummary, Task
from ..plan import Routing


class RunStorage(Protocol):
    """The run's storage. Each method is one transaction (`purge_expired`: one per
    batch) unless said otherwise; none reads or writes an application's rows."""

    @property
    def dialect(self) -> str:
        """The SQLAlchemy dialect name: "sqlite", "postgresql", "mysql" or "mariadb"."""
        ...

    def bound(self) -> AbstractContextManager[None]:
        """Inside the block, every transaction of this thread runs on one connection
        (nested blocks reuse it). Changes nothing else: each method still commits."""
        ...

    def next_task(
        self,
        *,
        skip_run: str | None = None,
        skip_task: int | None = None,
        exclude: Collection[int] = (),
        routing: Routing | None = None,
    ) -> Task | None:
        """The due task (not ended) that comes first in run order (`models.run_order`,
        then id), with its actions by rank; None when there is none. Only from the
        queues `routing` serves (None: any); passes over tasks last written by run
        `skip_run`, task `skip_task`, those in `exclude`, those under another run's
        live lease, and those of a queue paused when the query runs. Reads only."""
        ...

    def claim(
        self,
        worker: str,
        run_id: str,
        lease: float,
        *,
        exclude: Collection[int] = (),
        routing: Routing | None = None,
    ) -> Task | None:
        """Take the first task `next_task(skip_run=run_id, exclude=..., routing=...)`
        would give that no live lease holds: its `claim_token` goes up by one, it is
        held as `worker` for `lease` seconds and marked written by `run_id` (which so
        never claims it twice). Returns it as claimed; None when no task is free. Two
        concurrent claims never return the same task."""
        ...

    def heartbeat(self, task_id: int, token: int, lease: float) -> bool:
        """Extend the claim `token` on the task to `lease` seconds from now. False, with
        nothing written, when the claim is lost: the task was claimed since (another
        token) or released."""
        ...

    def release(self, task_id: int, token: int) -> None:
        """End the claim `token` (the task may be claimed again at once); nothing else
        is written, and nothing at all when the task was claimed since."""
        ...

    def reap_dead_claims(self) -> list[int]:
        """Release the live claims whose holder is a process of this host that is
        certainly dead (`owner.holder_is_gone`); returns those tasks' ids. Live holders
        and other hosts' claims are left alone."""
        ...

    def apply(self, *changes: Change) -> None:
        """Write every change (task row, its actions, its events) in one transaction, or
        none of them. A change is refused while its task is ended or asked to cancel
        (TaskInterrupted) and, with a `token`, once another claim took the task
        (ClaimLost); with `claim_as`, it takes the claim, refused (ClaimLost) under
        another run's live lease. A refusal raises and writes nothing."""
        ...

    def end_cancelled(self, task_id: int, run_id: str, rank: int | None, params: Any) -> None:
        """End the task as cancelled (its pending and active actions too, with an
        event naming `run_id`), saving `params` on action `rank` when both are given.
        Nothing happens to a task already ended."""
        ...

    def purge_expired(self, keep: Mapping[str, float], *, deadline: float) -> int:
        """Delete bgtaskex's own ended tasks (with their actions and events) whose status
        `keep` names and that ended more than its seconds ago (0: all of them), until
        `deadline` (a time.time() stamp) passes; returns how many went. Never a task
        not ended, whatever `keep` says. The run records past the same retention go
        too, uncounted: "ok" ones after `keep["finished"]`, the others after
        `keep["failed"]` (a record still "running" counts from its start)."""
        ...

    def run_started(self, start: RunStart) -> int:
        """Record a run that took its lock: one row, outcome "running", committed before
        the call returns; returns the row's id for `run_ended`."""
        ...

    def run_killed(self, run_id: str, error: str) -> None:
        """Record that run `run_id` is being killed (exit 7, a hook past `kill_after`),
        in one transaction: outcome "died", ended_at (now) and `error` (why), if its
        record still says "running". Called from the killing watchdog's thread."""
        ...

    def run_ended(
        self, record: int, outcome: str, summary: RunSummary, error: str | None = None
    ) -> None:
        """Record the end of run `record` in one transaction: its `outcome` ("ok",
        "failed", "storage"), ended_at (now), the counts, purged and max_overrun of
        `summary`, and `error` (already masked). Called outside `bound()`, it opens a
        connection of its own."""
        ...

    def cluster_lock(self, wait: float = 0.0) -> AbstractContextManager[Callable[[], bool]]:
        """Hold the database run lock for the block (PostgreSQL, MySQL / MariaDB;
        ConfigError on SQLite): LockBusy when another session holds it after `wait`
        seconds. The block gets a function telling whether it is still held."""
        ...

    def has_due_tasks(self) -> bool:
        """Whether any task of a queue not paused is due (not ended, its not_before not
        ahead), whoever holds it. Reads only."""
        ...

    def queue_paused(self, queue: str) -> bool:
        """Whether an operator paused `queue` now. Reads only. (`next_task` and `claim`
        pass over the tasks of paused queues by themselves.)"""
        ...
