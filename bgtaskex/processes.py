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
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from .bounds import POSITIVE_DURATION
from .schedule import WeeklyWindow
from .walltime import local_zone

DEFAULT_EVERY = 60.0
HORIZON = timedelta(days=9 * 366)  # how far `next_occurrence` looks: past 2100's lost Feb 29
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
    # Set by `Settings.scheduled` on a process serving every queue: the queues that
    # another process serves, and this one leaves to it.
    exclude_queues: tuple[str, ...] = ()

    def describe_trigger(self) -> str:
        trigger = f"cron {self.cron!r}" if self.cron else f"every {self.every:g}s"
        return trigger + (f" within {self.window}" if self.window else "")

    def trigger(self, zone: tzinfo | None = None) -> Any:
        """The APScheduler 3 trigger of this process in `zone` (default: the local zone);
        imports APScheduler. A cron follows crontab's rules (`crontab.CrontabTrigger`).
        An interval is counted on UTC instants (its times are in UTC): in a local zone,
        APScheduler would lose the fold of a time in a repeated hour."""
        if self.cron:
            from .crontab import CrontabTrigger

            return CrontabTrigger(self.cron, cron_fields(self.cron), zone or local_zone())
        from apscheduler.triggers.interval import IntervalTrigger

        return IntervalTrigger(seconds=self.every or DEFAULT_EVERY, timezone=UTC)

    def next_occurrence(self, now: datetime, zone: tzinfo | None = None) -> datetime | None:
        """When the process will next do work after `now` (aware): its next trigger time
        inside its window, in `zone` (default: the local zone). None: the window is
        disabled, or no trigger time falls in it within `HORIZON` of the first trigger
        time (a Feb 29 cron is found across a century's skipped leap day)."""
        zone = zone or local_zone()
        trigger = self.trigger(zone)

        def first_after(moment: datetime) -> datetime | None:  # read in `zone`
            fire = trigger.get_next_fire_time(None, moment)
            return None if fire is None else fire.astimezone(zone)

        fire = first_after(now)
        if fire is None or self.window is None:
            return fire
        horizon = fire + HORIZON
        while fire is not None and fire <= horizon:
            opens = self.window.next_occurrence(fire)
            if opens is None:
                return None
            if opens is fire:  # inside: returned unchanged
                return fire
            # Outside: the first trigger time at or after the window opens (opens > fire,
            # so each pass moves forward).
            fire = first_after(opens)
        return None


DEFAULT_PROCESS = Process(name="default", every=DEFAULT_EVERY)

_CRON_RANGES = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")
_CRON_ITEM = re.compile(r"^(?P<range>\*|(?P<lo>\w+)(?:-(?P<hi>\w+))?)(?:/(?P<step>\d+))?$")


def cron_fields(expression: str) -> tuple[str, str, str, str, str]:
    """Check a standard crontab expression (5 fields; numbers, names, `*`, ranges,
    lists, steps) without importing APScheduler, and return its fields for APScheduler's
    CronTrigger, with day-of-week numbers in crontab's meaning (0 and 7 = Sunday; in
    APScheduler 3, 0 is Monday). ValueError names the bad field."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"expected 5 fields (minute hour day month weekday), got {expression!r}")
    out: list[str] = []
    for text, (what, low, high) in zip(fields, _CRON_RANGES, strict=True):
        items: list[str] = []
        for item in text.lower().split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                raise ValueError(f"bad {what} {text!r} in {expression!r}")
            bounds = [b for b in (match["lo"], match["hi"]) if b is not None]
            values = [_cron_value(b, what, low, high, expression) for b in bounds]
            if len(values) == 2 and values[0] > values[1]:
                raise ValueError(f"bad {what} range {item!r} in {expression!r}")
            step = match["step"]
            if step is not None and int(step) < 1:
                raise ValueError(f"bad {what} step in {item!r} of {expression!r}: expected >= 1")
            if step is not None and what != "day of week":
                first = values[0] if values else low
                last = values[1] if len(values) == 2 else high
                if int(step) > last - first:
                    # One value, as crontab reads it ("*/31" day: the 1st; "31/1": the
                    # 31st), written without the step, which APScheduler would refuse.
                    item, values, step = str(first), [first], None
            if what == "day of week":  # spelled out as names: the numbers differ
                first, last = (values + values)[:2] if values else (0, 6)
                if step is not None and len(values) == 1:
                    last = 6  # "1/2": from Monday, every other day
                items.extend(_WEEKDAYS[v] for v in range(first, last + 1, int(step or 1)))
                continue
            if values and what == "month":  # numbers: APScheduler takes no "1-jan"
                item = "-".join(map(str, values)) + (f"/{step}" if step else "")
            items.append(item)
        out.append(",".join(dict.fromkeys(items)))
    if not fields[4].startswith("*") or fields[2].startswith("*"):
        return out[0], out[1], out[2], out[3], out[4]  # some day of each month matches
    days, months = _numbers(out[2], 1, 31), _numbers(out[3], 1, 12)
    if not any(day <= _MONTH_DAYS[month - 1] for day in days for month in months):
        raise ValueError(
            f"{expression!r} never fires: no such date (day {fields[2]} of month {fields[3]})"
        )
    return out[0], out[1], out[2], out[3], out[4]


_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # Feb 29 does come


def _numbers(text: str, low: int, high: int) -> set[int]:
    """The values of a checked numeric field in APScheduler's syntax ("1-15/2,31")."""
    values: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(v) for v in span.split("-"))
        else:
            first = int(span)
            last = high if step else first
        values.update(range(first, last + 1, int(step or 1)))
    return values


def _cron_value(token: str, what: str, low: int, high: int, expression: str) -> int:
    if token.isdigit():
        value = int(token)
    elif what == "month" and token in _MONTHS:
        value = _MONTHS.index(token) + 1
    elif what == "day of week" and token in _WEEKDAYS:
        value = _WEEKDAYS.index(token)
    else:
        raise ValueError(f"bad {what} {token!r} in {expression!r}")
    if not low <= value <= high:
        raise ValueError(f"{what} {value} out of {low}-{high} in {expression!r}")
    return value


def parse_processes(value: object) -> tuple[Process, ...]:
    """Processes from the config's `[[processes]]` tables; ValueError names the problem."""
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError("expected [[processes]] tables")
    found: list[Process] = []
    for index, table in enumerate(value, 1):
        found.append(_parse_one(table, index))
    names = [p.name for p in found]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two processes are named {name!r}")
    return tuple(found)


def _parse_one(table: Mapping[str, Any], index: int) -> Process:
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
    every = _duration(table, "every", where)
    budget = _duration(table, "max_execution_time", where)
    cron = table.get("cron")
    if cron is not None:
        if not isinstance(cron, str):
            raise ValueError(f"{where}: 'cron' must be a crontab expression, got {cron!r}")
        try:
            cron_fields(cron)
        except ValueError as err:
            raise ValueError(f"{where}: cron: {err}") from None
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


def _duration(table: Mapping[str, Any], key: str, where: str) -> float | None:
    """A process's `every` or `max_execution_time`: a duration > 0, the rule of the
    top-level max_execution_time (bounds.POSITIVE_DURATION)."""
    if key not in table:
        return None
    try:
        return POSITIVE_DURATION.seconds(table[key])
    except ValueError as err:
        raise ValueError(f"{where}: {key}: {err}") from None
