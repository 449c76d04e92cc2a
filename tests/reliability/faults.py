"""Helpers of the signal, database-fault and contention tests (tests/reliability).

* `SEED` (`BGTASKEX_TORTURE_SEED`) seeds every random choice; each test prints it. (The
  size, `BGTASKEX_TORTURE=long`, is `tests.reliability.LONG` / `scaled(quick, long)`.)
* `Chunked`: a resumable action that journals every hook call *and* its return to a
  JSON-lines file, so a test can tell a hook cut off by its process from one that
  finished, and check afterwards that no work was lost or done twice.
* `StatementFaults`: a SQLAlchemy `before_cursor_execute` hook that counts the statements
  of an engine and makes the Nth one (or every one from the Nth on) raise
  `sqlalchemy.exc.OperationalError`, as a database blip (or a database gone) would.
* `task_problems`: what is inconsistent in one task (its status against its actions').
* `proc_problems`: what a CLI process must never print.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy import exc as sa_exc

from bgtaskex import Action
from bgtaskex.client import Client
from bgtaskex.models import TERMINAL as TERMINAL_TASK
from bgtaskex.models import ActionStatus, Task, TaskStatus
from tests.support import journal as test_journal

SEED = int(os.environ.get("BGTASKEX_TORTURE_SEED", "20260517"))
CHUNKED = "tests.reliability.faults:Chunked"


def wait_for(condition: Any, what: str, timeout: float = 30.0, poll: float = 0.01) -> float:
    """Poll `condition()` until true; AssertionError after `timeout` s. Returns the wait."""
    began = time.monotonic()
    while not condition():
        if time.monotonic() - began > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - began


# -- a journaling, resumable action -----------------------------------------------------


def journal(log: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every entry `Chunked` wrote: {"name", "hook", "pid", "phase": "call"|"return", ...}.
    A line cut short by a dying process (no newline yet) is ignored."""
    return test_journal.read(log)


class Chunked(Action):
    """`work_ms` milliseconds of work, resumable; journals each hook call and return.

    params: name, log (JSON-lines path), work_ms, cooperative (True: 20 ms chunks, stops
    at `should_stop()` or near the deadline, checkpoints every 5 chunks; False: one
    uninterruptible sleep of the rest), init_ms (an uninterruptible sleep in init_params).
    `done_ms` is the work done so far, saved with the params.
    """

    CHUNK_MS = 20

    def _journal(self, hook: str, phase: str, **more: Any) -> None:
        entry = {"name": self.params["name"], "hook": hook, "pid": os.getpid(), "phase": phase}
        entry.update(more, t=time.time())
        test_journal.append(self.params["log"], entry)

    def init_params(self) -> bool:
        self._journal("init", "call")
        time.sleep(self.params.get("init_ms", 0) / 1000)
        self.params["done_ms"] = 0
        self._journal("init", "return", result=True)
        return True

    def change_params_on_error(self) -> bool:
        self._journal("change", "call", done_ms=self.params.get("done_ms"))
        self._journal("change", "return", result=True)
        return True

    def execute(self, deadline: float) -> bool:
        work, done = int(self.params["work_ms"]), int(self.params.get("done_ms", 0))
        self._journal("execute", "call", done_ms=done)
        if not self.params.get("cooperative"):
            time.sleep(max(0, work - done) / 1000)
            self.params["done_ms"] = work
            self._journal("execute", "return", result=True, done_ms=work)
            return True
        chunks = 0
        while done < work:
            if self.should_stop() or time.time() + self.CHUNK_MS / 1000 > deadline:
                self._journal("execute", "return", result=False, done_ms=done)
                return False
            time.sleep(self.CHUNK_MS / 1000)
            done = min(work, done + self.CHUNK_MS)
            self.params["done_ms"] = done
            self.progress(done, work)
            chunks += 1
            if chunks % 5 == 0:
                self.checkpoint()
        self._journal("execute", "return", result=True, done_ms=done)
        return True


def chunked(log: str, name: str, work_ms: int, *, cooperative: bool, init_ms: int = 0) -> Any:
    """A (ref, params) action spec of `Chunked`."""
    params = {
        "name": name,
        "log": str(log),
        "work_ms": work_ms,
        "cooperative": cooperative,
        "init_ms": init_ms,
    }
    return (CHUNKED, params)


def cut_off_hooks(entries: Iterable[Mapping[str, Any]], pid: int) -> list[str]:
    """The hook calls of process `pid` that never returned (the process died in them)."""
    open_calls: dict[tuple[str, str], int] = defaultdict(int)
    for entry in entries:
        if entry["pid"] != pid:
            continue
        key = (entry["name"], entry["hook"])
        open_calls[key] += 1 if entry["phase"] == "call" else -1
    return [f"{name}.{hook}" for (name, hook), n in sorted(open_calls.items()) if n > 0]


def exactly_once_problems(entries: Iterable[Mapping[str, Any]], names: Iterable[str]) -> list[str]:
    """For runs where no process died inside a hook: each action's init_params called and
    returned once, change_params_on_error never, and one execute returned True, its
    last, after which no hook of that action was called again."""
    by_name: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_name[entry["name"]].append(entry)
    problems = []
    for name in names:
        mine = by_name.get(name, [])
        calls = [(e["hook"], e["phase"]) for e in mine]
        inits = calls.count(("init", "call"))
        changes = calls.count(("change", "call"))
        true_returns = [
            i for i, e in enumerate(mine) if e["phase"] == "return" and e.get("result") is True
        ]
        done = [i for i in true_returns if mine[i]["hook"] == "execute"]
        if inits != 1:
            problems.append(f"{name}: init_params called {inits} times")
        if changes:
            problems.append(f"{name}: change_params_on_error called {changes} times")
        if len(done) != 1:
            problems.append(f"{name}: execute returned True {len(done)} times")
        elif done[0] != len(mine) - 1:
            problems.append(f"{name}: hook calls after its final execute: {calls[done[0] :]}")
    return problems


class WorkPool:
    """Tasks of random `Chunked` actions (seeded), topped up to a backlog of work, and
    the checks that none of it was lost or done twice."""

    def __init__(self, client: Client, log: str, rng: random.Random, prefix: str) -> None:
        self.client = client
        self.log = log
        self.rng = rng
        self.prefix = prefix
        self.task_ids: list[int] = []
        self.work: dict[str, int] = {}  # action name -> work_ms
        self.longest_hook_ms = 0  # the longest stretch no signal can cut short

    def _action(self, name: str) -> Any:
        rng = self.rng
        cooperative = rng.random() < 0.5
        work = rng.randrange(100, 700, 20) if cooperative else rng.randrange(50, 400, 10)
        init = rng.choice([0, 0, 50, 150])
        self.work[name] = work
        # init_params, then (the runner does not look at the stop request in between)
        # an execute that does not cooperate
        self.longest_hook_ms = max(self.longest_hook_ms, init + (0 if cooperative else work))
        return chunked(self.log, name, work, cooperative=cooperative, init_ms=init)

    def pending_ms(self) -> int:
        """The work still to do in the pool's unended tasks."""
        mine = set(self.task_ids)
        left = 0
        for task in self.client.list_tasks(status=["active"], limit=10_000):
            if task.id in mine:
                for action in task.actions:
                    if action.status in (ActionStatus.PENDING, ActionStatus.ACTIVE):
                        left += action.params["work_ms"] - action.params.get("done_ms", 0)
        return left

    def top_up(self, at_least_ms: int) -> int:
        """Enqueue tasks (1-3 actions each) until that much work waits; how many."""
        added = 0
        while self.pending_ms() < at_least_ms:
            number = len(self.task_ids) + 1
            count = self.rng.randint(1, 3)
            actions = [self._action(f"{self.prefix}{number}.{r}") for r in range(1, count + 1)]
            self.task_ids.append(self.client.enqueue(f"{self.prefix}{number}", actions))
            added += 1
        return added

    def tasks(self) -> list[Task]:
        return [self.client.get(task_id) for task_id in self.task_ids]

    def due(self) -> bool:
        return any(t.status not in TERMINAL_TASK for t in self.tasks())

    def consistency_problems(self) -> list[str]:
        """After a graceful stop: every task consistent, none left in a status that says
        a hook died (starting, running, recovering)."""
        problems = []
        for task in self.tasks():
            problems += task_problems(task)
            if task.status in (TaskStatus.STARTING, TaskStatus.RUNNING, TaskStatus.RECOVERING):
                problems.append(f"task {task.id} ({task.name}) left {task.status}: a hook died")
        return problems

    def final_problems(self) -> list[str]:
        """Once clean runs are done: every task finished, every action done with all its
        work, each hook called exactly as a run without a death calls it."""
        problems = []
        for task in self.tasks():
            problems += task_problems(task)
            if task.status is not TaskStatus.FINISHED:
                problems.append(f"task {task.id} ({task.name}) is {task.status}, not finished")
            for action in task.actions:
                name = action.params["name"]
                if action.status is not ActionStatus.DONE:
                    problems.append(f"action {name} is {action.status}, not done")
                if action.params.get("done_ms") != self.work[name]:
                    problems.append(
                        f"action {name}: {action.params.get('done_ms')} of {self.work[name]} ms "
                        "of work saved"
                    )
        return problems + exactly_once_problems(journal(self.log), self.work)


# -- the state of tasks ------------------------------------------------------------------

ENDED_ACTION = {ActionStatus.DONE, ActionStatus.SKIPPED, ActionStatus.FAILED}


def task_problems(task: Task) -> list[str]:
    """What is inconsistent in `task`: its status against its actions' and current action."""
    statuses = [a.status for a in task.actions]
    active = [a.rank for a in task.actions if a.status is ActionStatus.ACTIVE]
    where = f"task {task.id} ({task.name}, {task.status}, actions {[str(s) for s in statuses]})"
    problems = []
    status = task.status
    if status in (TaskStatus.FINISHED, TaskStatus.FAILED, TaskStatus.CANCELLED):
        if any(s in (ActionStatus.PENDING, ActionStatus.ACTIVE) for s in statuses):
            problems.append(f"{where}: ended with an action still pending or active")
        failed = ActionStatus.FAILED in statuses
        if status is TaskStatus.FINISHED and (failed or ActionStatus.CANCELLED in statuses):
            problems.append(f"{where}: finished with a failed or cancelled action")
        if status is TaskStatus.FAILED and not failed:
            problems.append(f"{where}: failed without a failed action")
    elif status is TaskStatus.CREATED:
        if active:
            problems.append(f"{where}: between actions, yet action(s) {active} active")
        if ActionStatus.PENDING not in statuses:
            problems.append(f"{where}: created with no pending action left")
    elif status in (
        TaskStatus.STARTING,
        TaskStatus.RUNNING,
        TaskStatus.RECOVERING,
        TaskStatus.PAUSED,
    ):
        if active != [task.current_rank]:
            problems.append(
                f"{where}: current action {task.current_rank}, but active action(s) {active}"
            )
    else:
        problems.append(f"{where}: unknown status")
    ranks = [a.rank for a in task.actions]
    if ranks != list(range(1, len(ranks) + 1)):
        problems.append(f"{where}: ranks {ranks}")
    return problems


# -- processes -------------------------------------------------------------------------

NEVER_PRINTED = ("Traceback", "database is locked", "internal error")


def proc_problems(what: str, code: int | None, out: str, err: str, codes: Iterable[int] = (0,)):
    """What a finished CLI process did wrong: an unexpected exit code, a traceback,
    "database is locked", an internal error."""
    problems = []
    if code not in tuple(codes):
        problems.append(f"{what}: exit code {code}")
    for text in NEVER_PRINTED:
        if text in out or text in err:
            problems.append(f"{what}: printed {text!r}")
    if problems:
        problems.append(f"--- stdout\n{out[-2000:]}\n--- stderr\n{err[-3000:]}")
    return problems


# -- statement faults ---------------------------------------------------------------------


class InjectedFault(Exception):
    """The driver-level error inside the OperationalError that `StatementFaults` raises."""


@dataclass(frozen=True)
class Seen:
    """One statement `StatementFaults` saw."""

    number: int
    statement: str
    parameters: Any
    in_hook: bool
    snapshot: Any

    def short(self) -> str:
        return " ".join(self.statement.split())[:60]


HOOK_NAMES = frozenset({"init_params", "execute", "change_params_on_error"})


def in_hook() -> bool:
    """Whether the current call stack is inside a hook of an Action."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name in HOOK_NAMES and isinstance(frame.f_locals.get("self"), Action):
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class StatementFaults:
    """Counts the statements an engine sends; with `fail_at=N`, the Nth raises
    OperationalError (`forever`: the Nth and every later one: the database is gone).

    `statements` keeps, for each statement seen: its text, its parameters, whether an
    action's hook sent it (`Action.checkpoint`, `note`) and what `snapshot()` said just
    before it (e.g. how many hook calls were logged by then); `failed` the same for the
    statements refused."""

    def __init__(self, engine: Engine, snapshot: Callable[[], Any] = lambda: None) -> None:
        self.engine = engine
        self.snapshot = snapshot
        self.fail_at: int | None = None
        self.forever = False
        self.count = 0
        self.statements: list[Seen] = []
        self.failed: list[Seen] = []

    @contextmanager
    def installed(self, fail_at: int | None = None, forever: bool = False) -> Iterator[None]:
        self.fail_at, self.forever = fail_at, forever
        self.count = 0
        self.statements, self.failed = [], []
        event.listen(self.engine, "before_cursor_execute", self._before)
        try:
            yield
        finally:
            event.remove(self.engine, "before_cursor_execute", self._before)

    def _before(
        self,
        _conn: Any,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: Any,
        _executemany: bool,
    ) -> None:
        self.count += 1
        seen = Seen(self.count, statement, parameters, in_hook(), self.snapshot())
        self.statements.append(seen)
        n = self.fail_at
        if n is not None and (self.count == n or (self.forever and self.count > n)):
            self.failed.append(seen)
            raise sa_exc.OperationalError(
                statement, parameters, InjectedFault(f"injected fault at statement {self.count}")
            )
