"""Time in the torture workloads (#14): tasks queued with a delay (not_before), tasks
whose first execute snoozes, tasks with a unique key, and the runs' retry backoff on.

`SnoozingJournalAction` is a `JournalAction` whose first execute (params "snooze",
seconds) journals its enter and exit ("outcome": "snoozed") and returns
`self.snooze(seconds)`; later executes work as a JournalAction's. `mixed(...)` queues
such tasks; invariants.py checks them (J8: no execute before it is due; K1: a unique key
held by one unended task at most).
"""

from __future__ import annotations

import random
import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from tests.reliability.invariants import TERMINAL
from tests.support.journal import REF as JOURNAL_REF
from tests.support.journal import JournalAction

if TYPE_CHECKING:
    from tests.reliability.conftest import Run, Torture

REF = "tests.reliability.timed:SnoozingJournalAction"
#: The backoff of the runs of a test with it on: short real delays, so the test stays
#: bounded (a death waits 0.3 s, then 0.6, 1.2, then 1.5 s at most), yet long enough
#: for J8 to see an execute that came early (invariants.DELAY_SLACK is 0.1 s).
RETRY_DELAY = 0.3
MAX_RETRY_DELAY = 1.5
KINDS = ("delayed", "snoozing", "unique")


class SnoozingJournalAction(JournalAction):
    description = "a JournalAction whose first execute snoozes for params['snooze'] seconds"

    def execute(self, deadline: float) -> bool:
        p = self.params
        seconds = float(p.get("snooze", 0))
        if seconds <= 0 or p.get("snoozed"):
            return super().execute(deadline)
        cursor = int(p.get("cursor", 0))
        self._journal("enter", cursor=cursor)
        p["snoozed"] = True
        self._journal("exit", outcome="snoozed", cursor=cursor)
        return self.snooze(seconds)


def backoff(torture: Torture, delay: float = RETRY_DELAY, cap: float = MAX_RETRY_DELAY) -> None:
    """The runs of `torture` retry with backoff (`delay` doubled up to `cap`); its
    checks then hold a raise's retry to it too (J8)."""
    torture.retry_delay = delay
    torture.env["BGTASKEX_RETRY_DELAY"] = str(delay)
    torture.env["BGTASKEX_MAX_RETRY_DELAY"] = str(cap)


def mixed(
    torture: Torture,
    count: int,
    rng: random.Random,
    *,
    prefix: str = "m",
    actions: int = 2,
    units: int = 4,
    unit_ms: float = 5.0,
    most: float = 2.0,
) -> dict[str, list[str]]:
    """Queue `count` tasks of `actions` JournalActions each, in turn delayed (0.3 s to
    `most` s), snoozing (their first action, 0.3 s to `most` s) and unique-keyed (each
    queued twice: the second enqueue finds the first, not ended). {kind: labels}."""
    from bgtaskex.client import connect
    from bgtaskex.config import Settings
    from tests.reliability.conftest import MODULE

    settings = Settings(database_url=torture.url, lock_file=str(torture.lock), imports=(MODULE,))
    if __name__ not in torture.imports:
        torture.imports.append(__name__)  # the runs import the snoozing action
    labels: dict[str, list[str]] = {kind: [] for kind in KINDS}
    with connect(settings=settings) as client:
        for n in range(count):
            kind = KINDS[n % len(KINDS)]
            names = [f"{prefix}{n:03d}.{kind}.a{r}" for r in range(1, actions + 1)]
            specs: list[tuple[str, dict[str, Any]]] = []
            options: dict[str, Any] = {}
            due = None
            if kind == "delayed":
                due = datetime.now(UTC) + timedelta(seconds=rng.uniform(0.3, most))
                options["not_before"] = due
            for r, label in enumerate(names):
                params = torture.params(label, units=units, unit_ms=unit_ms)
                if due is not None:
                    params["not_before"] = due.timestamp()
                ref = JOURNAL_REF
                if kind == "snoozing" and r == 0:
                    ref, params["snooze"] = REF, round(rng.uniform(0.3, most), 2)
                specs.append((ref, params))
            if kind == "unique":
                key = f"{prefix}-key-{n}"
                first = client.enqueue_unique(f"{prefix}{n}", specs, unique_key=key)
                again = client.enqueue_unique(f"{prefix}{n} again", specs, unique_key=key)
                assert first.created and (again.id, again.created) == (first.id, False)
            else:
                client.enqueue(f"{prefix}{n}", specs, **options)
            labels[kind] += names
    return labels


NOTHING_DUE = re.compile(r"^nothing due \([\d.]+s\)(?:; next due at (?P<due>\S+))?$")


def next_due(run: Run) -> float | None:
    """When the run said the next task is due (epoch), if it found nothing due."""
    lines = run.stdout.splitlines()
    match = NOTHING_DUE.match(lines[0]) if len(lines) == 1 else None
    if match is None or not match["due"]:
        return None
    return datetime.fromisoformat(match["due"].replace("Z", "+00:00")).timestamp()


def drain(torture: Torture, *more: object, within: float = 60.0) -> list[Run]:
    """run-once (with `more` options) until every task has ended, waiting for the next
    due time when a run finds nothing due; fails after `within` seconds."""
    give_up = time.monotonic() + within
    runs: list[Run] = []
    while time.monotonic() < give_up:
        report = torture.check(killed_pids={r.pid for r in runs if r.returncode == -9})
        if not set(report.tasks) - TERMINAL:
            return runs
        run = torture.run_once(*more)
        runs.append(run)
        due = next_due(run)
        if due is not None:  # the condition itself: the time a task becomes due
            time.sleep(max(0.0, min(due - time.time(), give_up - time.monotonic())))
        elif run.summary() is None and run.returncode != -9:
            pytest.fail(run.describe())
    pytest.fail(f"work left after {within}s: {torture.check().summary()}")
