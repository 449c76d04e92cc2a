"""The overview's headline: what an operator needs at a glance, in words and symbols
(never colour alone). `check`'s verdict on its own says "OK" while a task failed or a
queue is paused, as it should for monitoring; the headline puts those beside it, and
keeps the verdict itself exactly as `bgtaskex check` (without `--failed-within`) gives
it."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..health import Health

#: How far back the headline counts failed tasks, in seconds.
FAILED_WITHIN = 24 * 3600.0

_LEVELS = ("ok", "warn", "bad")


@dataclass(frozen=True, slots=True)
class Item:
    """One part of the headline: `level` (ok, warn, bad, run) for its colour, `icon`
    and `text` that say it without colour, and a page it links to (a path from the
    root and its query) or None."""

    level: str
    icon: str
    text: str
    path: str | None = None
    query: dict[str, str] = field(default_factory=dict)
    testid: str = ""


@dataclass(frozen=True, slots=True)
class Glance:
    """The headline's items, the worst level among them, and `check`'s verdict: its
    problems (none: OK) and notes, as `bgtaskex check` words them."""

    level: str
    items: tuple[Item, ...]
    problems: tuple[str, ...]
    notes: tuple[str, ...]


def _plural(count: int, one: str, many: str) -> str:
    return f"{count:,} {one if count == 1 else many}"


def glance(health: Health, running: int) -> Glance:
    """The headline of `health` (read with `failed_within=FAILED_WITHIN`) and the count
    of tasks running now."""
    check = replace(health, failed_within=None, failed_recently=None, failed_ids=())
    problems, notes = tuple(check.problems()), tuple(check.notes())
    items: list[Item] = []
    if problems:
        text = _plural(len(problems), "problem needs", "problems need") + " a look (below)"
        items.append(Item("bad", "⚠", text, testid="glance-check"))
    else:
        items.append(Item("ok", "✔", "Runs healthy, nothing stuck", testid="glance-check"))
    failed = health.failed_recently or 0
    if failed:
        text = _plural(failed, "task", "tasks") + " failed in the last 24 h"
        query = {"status": "failed"}
        items.append(Item("bad", "✖", text, "/tasks", query, testid="glance-failed"))
    if health.paused:
        names = ", ".join(p.queue for p in health.paused)
        text = f"{'queue' if len(health.paused) == 1 else 'queues'} {names} paused"
        items.append(Item("warn", "‖", text, testid="glance-paused"))
    if running:
        text = _plural(running, "task", "tasks") + " running"
        query = {"status": "running"}
        items.append(Item("run", "▶", text, "/tasks", query, testid="glance-running"))
    level = max((i.level for i in items if i.level in _LEVELS), key=_LEVELS.index)
    return Glance(level, tuple(items), problems, notes)


def running_count(stats: dict[str, Any]) -> int:
    """The tasks running now, from `stats --json`'s counts."""
    return sum(int(row["count"]) for row in stats["tasks"] if row["status"] == "running")
