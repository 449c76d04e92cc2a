"""Scheduled processes: what the daemon triggers, and `run-once --process NAME`.

A process names the queues it serves, its budget, a trigger (`every = "60s"` or
`cron = "*/5 * * * *"`), optionally a weekly window it may only run in, and optionally a
callable that plans work (creates tasks) when it is due, with the lock held. With none
configured there is one: every queue, every 60 s, a 30 s budget.

Parsing here is cheap (no APScheduler); `trigger()` imports APScheduler when the daemon
or `bgtaskex processes` needs it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .schedule import WeeklyWindow

DEFAULT_EVERY = 60.0
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")
_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_KEYS = {"name", "queues", "max_execution_time", "every", "cron", "window", "callable"}
_WINDOW_KEYS = {"days", "start", "end", "enabled"}


@dataclass(frozen=True, slots=True)
class Process:
    """One scheduled process."""

    name: str
    queues: tuple[str, ...] | None = None  # None: every queue
    max_execution_time: float | None = None  # None: the global setting
    every: float | None = None  # seconds between runs
    cron: str | None = None  # a crontab expression, in local time
    window: WeeklyWindow | None = None
    callable: str | None = None  # "module:function", called with the client when due

    def describe_trigger(self) -> str:
        trigger = f"cron {self.cron!r}" if self.cron else f"every {self.every:g}s"
        return trigger + (f" within {self.window}" if self.window else "")

    def trigger(self) -> Any:
        """The APScheduler 3 trigger of this process (imports APScheduler)."""
        if self.cron:
            from apscheduler.triggers.cron import CronTrigger

            return CronTrigger.from_crontab(self.cron)
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=self.every or DEFAULT_EVERY)

    def next_occurrence(self, now: datetime) -> datetime | None:
        """When the process will next do work: its next trigger time, moved to the start
        of its window when the trigger falls outside (then the first trigger inside)."""
        trigger = self.trigger()
        fire = trigger.get_next_fire_time(None, now)
        for _ in range(100_000):  # a window far away: walk the trigger up to it
            if fire is None or self.window is None or self.window.contains(fire):
                return fire  # type: ignore[no-any-return]
            opens = self.window.next_occurrence(fire)
            if opens is None:
                return None
            fire = trigger.get_next_fire_time(fire, opens)
            if fire is not None and fire < opens:
                fire = trigger.get_next_fire_time(fire, opens)
        return None


DEFAULT_PROCESS = Process(name="default", every=DEFAULT_EVERY)


def parse_processes(
    value: object, parse_duration: Callable[[object], float]
) -> tuple[Process, ...]:
    """Processes from the config's `[[processes]]` tables; ValueError names the problem."""
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError("expected [[processes]] tables")
    found: list[Process] = []
    for index, table in enumerate(value, 1):
        found.append(_parse_one(table, index, parse_duration))
    names = [p.name for p in found]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two processes are named {name!r}")
    return tuple(found)


def _parse_one(
    table: Mapping[str, Any], index: int, parse_duration: Callable[[object], float]
) -> Process:
    where = f"process {table.get('name', index)!r}"
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}: 'name' must be letters, digits, '.', '-' or '_'")
    queues = table.get("queues")
    if queues is not None and (
        not isinstance(queues, list) or not queues or not all(isinstance(q, str) for q in queues)
    ):
        raise ValueError(f"{where}: 'queues' must be a non-empty list of queue names")
    if ("every" in table) == ("cron" in table):
        raise ValueError(f"{where}: give exactly one of 'every' or 'cron'")
    every = _duration(table, "every", where, parse_duration)
    budget = _duration(table, "max_execution_time", where, parse_duration)
    cron = table.get("cron")
    if cron is not None and (not isinstance(cron, str) or len(cron.split()) != 5):
        raise ValueError(f"{where}: 'cron' must be a crontab expression of 5 fields, got {cron!r}")
    window = table.get("window")
    if window is not None:
        if not isinstance(window, Mapping) or set(window) - _WINDOW_KEYS:
            raise ValueError(f"{where}: 'window' takes days, start, end and enabled")
        try:
            window = WeeklyWindow(
                window.get("days", "mon-sun"),
                window.get("start", "00:00"),
                window.get("end", "23:59"),
                enabled=window.get("enabled", True),
            )
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: window: {err}") from None
    target = table.get("callable")
    if target is not None and (not isinstance(target, str) or not _CALLABLE.match(target)):
        raise ValueError(f"{where}: 'callable' must be 'package.module:function', got {target!r}")
    return Process(
        name=name,
        queues=tuple(queues) if queues else None,
        max_execution_time=budget,
        every=every,
        cron=cron,
        window=window,
        callable=target,
    )


def _duration(
    table: Mapping[str, Any], key: str, where: str, parse_duration: Callable[[object], float]
) -> float | None:
    if key not in table:
        return None
    try:
        seconds = parse_duration(table[key])
    except ValueError as err:
        raise ValueError(f"{where}: {key}: {err}") from None
    if seconds <= 0:
        raise ValueError(f"{where}: {key} must be more than 0")
    return seconds
