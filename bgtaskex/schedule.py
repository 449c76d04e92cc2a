"""Weekly time windows: when a background task is allowed to run.

`WeeklyWindow` ports `TimeRangeWeeklyScheduledService` of Combodo's iTop extension
"background task extended": a daily time range (`start`-`end`, "HH:MM") on some days of
the week. It answers "when may work happen next?" (`next_occurrence`), "is it allowed
now?" (`contains`) and "until when?" (`window_end`).

The windows, for each allowed day D:

* `start < end`: from D at `start` to D at `end`, both ends included.
* `start >= end`: the window crosses midnight, from D at `start` to D+1 at `end`, both
  ends included. So its tail on D+1 belongs to D: with `days=[7]` (Sunday) and
  23:00-02:00, Monday 01:00 is inside the window.
* `start == end` is a midnight-crossing window too: 24 hours, from D at `start` to D+1 at
  the same time. On consecutive allowed days the windows touch at `start`, so the time
  between them is covered without a gap. `00:00-00:00` therefore means "all of D (and
  the first instant of D+1)".

`end` is an instant: "05:30" is 05:30:00.000000, so 05:30:01 is already outside.

Times are wall-clock times. A naive `now` is a wall-clock time without DST changes and
results are naive; an aware `now` is read on the wall clock of its `tzinfo` (give a
`ZoneInfo`, such as `walltime.local_now()`, for DST to count) and results carry the same
`tzinfo`. Every computation is done on instants (UTC). Across a DST change a window is
the stretch of real time between its start and its end, each read by `walltime`'s rule:
a time the clock skips moves forward to the moment the clock jumps to, a time it shows
twice counts once (its first occurrence); a window wholly inside a skipped hour does not
open that day. `contains`, `next_occurrence`, `window_start` and `window_end` all follow
it, and `next_occurrence` never returns a time before `now`.

This module uses the standard library and `bgtaskex.walltime` only.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from .walltime import instant

__all__ = ["DAY_NAMES", "WeeklyWindow", "parse_days", "parse_hhmm"]

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
"""Three-letter English names of ISO weekdays 1 (Monday) to 7 (Sunday), as `__str__` writes them."""

_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_DAY_BY_NAME: dict[str, int] = {
    **{name.lower(): number for number, name in enumerate(DAY_NAMES, 1)},
    **{name: number for number, name in enumerate(_FULL_NAMES, 1)},
    **{str(number): number for number in range(1, 8)},
}
_ONE_DAY = timedelta(days=1)
_DAYS_HINT = "1 (Monday) to 7 (Sunday), an English day name or its 3-letter abbreviation"


def _parse_day_token(token: str, whole: object) -> int:
    number = _DAY_BY_NAME.get(token.strip().lower())
    if number is None:
        where = "" if whole == token else f" in {whole!r}"
        raise ValueError(f"bad day {token.strip()!r}{where}: expected {_DAYS_HINT}")
    return number


def _parse_day_text(text: str) -> list[int]:
    """Days from "mon,tue", "1-5", "Mon-Fri,sun"; see `parse_days`."""
    numbers: list[int] = []
    for part in text.split(","):
        if not part.strip():
            raise ValueError(f"bad days {text!r}: empty item (expected e.g. 'mon,tue' or '1-5')")
        if "-" in part:
            first_text, _, last_text = part.partition("-")
            first = _parse_day_token(first_text, text)
            last = _parse_day_token(last_text, text)
            if first > last:
                raise ValueError(
                    f"bad day range {part.strip()!r} in {text!r}: ranges go forward from "
                    "Monday to Sunday (write e.g. 'fri-sun,mon')"
                )
            numbers.extend(range(first, last + 1))
        else:
            numbers.append(_parse_day_token(part, text))
    return numbers


def parse_days(days: Iterable[int | str] | str) -> tuple[int, ...]:
    """The ISO weekday numbers (1 = Monday ... 7 = Sunday) of `days`, sorted, unique.

    Accepted: an iterable whose items are ISO numbers (ints 1-7) or strings, or a single
    string. A string is a comma-separated list of items; an item is a number "1"-"7", an
    English day name ("monday") or its 3-letter abbreviation ("mon"), in any case, with
    surrounding spaces ignored, or a forward range of two of those ("1-5", "mon-fri",
    "Sat-Sun"; a range may not wrap past Sunday). Duplicates are merged.

    Raises `ValueError` naming the bad value for an unknown day, a number out of 1-7, a
    bool, a backward range, an empty item or an empty list.
    """
    if isinstance(days, str):
        numbers = _parse_day_text(days)
    else:
        try:
            items = list(days)
        except TypeError:
            raise ValueError(
                f"bad days {days!r}: expected day numbers or names, e.g. [1, 2] or 'mon-fri'"
            ) from None
        numbers = []
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int | str):
                raise ValueError(f"bad day {item!r}: expected {_DAYS_HINT}")
            if isinstance(item, int):
                if not 1 <= item <= 7:
                    raise ValueError(f"bad day {item!r}: expected {_DAYS_HINT}")
                numbers.append(item)
            else:
                numbers.extend(_parse_day_text(item))
    if not numbers:
        raise ValueError(f"bad days {days!r}: no day given (at least one is needed)")
    return tuple(sorted(set(numbers)))


def parse_hhmm(text: object, what: str = "time") -> time:
    """The `time` of an "HH:MM" string, 00:00 to 23:59 (a one-digit hour like "9:05" is
    accepted; surrounding spaces are ignored). Raises `ValueError` naming the value."""
    if isinstance(text, str):
        hours, sep, minutes = text.strip().partition(":")
        if (
            sep
            and 1 <= len(hours) <= 2
            and len(minutes) == 2
            and all(c in "0123456789" for c in hours + minutes)
            and int(hours) < 24
            and int(minutes) < 60
        ):
            return time(int(hours), int(minutes))
    raise ValueError(f"bad {what} {text!r}: expected HH:MM between 00:00 and 23:59")


@dataclass(frozen=True, slots=True, init=False)
class WeeklyWindow:
    """A daily time window from `start` to `end` on some days of the week.

    `WeeklyWindow(days, start, end, enabled=True)`: `days` as accepted by `parse_days`
    (e.g. `[1, 2]`, `["Mon", "tuesday"]`, `"mon-fri"`), `start` and `end` as "HH:MM"
    (00:00-23:59). The attributes hold the normalised values: `days` a sorted tuple of
    ISO weekday numbers, `start`/`end` "HH:MM" with two-digit hours. Bad values raise
    `ValueError` naming them. When `start >= end` the window crosses midnight (see the
    module docstring); a disabled window is never open.

    Instances are immutable, hashable and compare by value.
    """

    days: tuple[int, ...]
    start: str
    end: str
    enabled: bool
    _start: time = field(init=False, repr=False, compare=False)
    _end: time = field(init=False, repr=False, compare=False)

    def __init__(
        self,
        days: Iterable[int | str] | str,
        start: str,
        end: str,
        enabled: bool = True,
    ) -> None:
        if not isinstance(enabled, bool):
            raise ValueError(f"bad enabled {enabled!r}: expected True or False")
        start_time = parse_hhmm(start, "start time")
        end_time = parse_hhmm(end, "end time")
        set_ = object.__setattr__
        set_(self, "days", parse_days(days))
        set_(self, "start", start_time.strftime("%H:%M"))
        set_(self, "end", end_time.strftime("%H:%M"))
        set_(self, "enabled", enabled)
        set_(self, "_start", start_time)
        set_(self, "_end", end_time)

    @property
    def crosses_midnight(self) -> bool:
        """True when `start >= end`: each window ends on the day after it started."""
        return self._start >= self._end

    def __str__(self) -> str:
        """E.g. "Mon,Tue 01:00-05:30", with " (disabled)" appended when disabled."""
        text = f"{','.join(DAY_NAMES[d - 1] for d in self.days)} {self.start}-{self.end}"
        return text if self.enabled else f"{text} (disabled)"

    def next_occurrence(self, now: datetime) -> datetime | None:
        """The first moment at or after `now` when the window is open.

        `now` itself (unchanged, seconds and microseconds included) when it is inside a
        window; otherwise the start of the next window (seconds 0); `None` when the
        window is disabled. Naive in, naive out; aware in, same `tzinfo` out. Never
        before `now`.
        """
        if not self.enabled:
            return None
        moment, zone = _instant(now)
        for start, end in self._windows(now, zone):
            if moment <= end:
                return now if start <= moment else _out(start, now)
        raise AssertionError("unreachable: an enabled window opens every week")

    def contains(self, now: datetime) -> bool:
        """Whether the window is open at `now`: `next_occurrence(now) == now`."""
        return self.next_occurrence(now) == now

    def window_end(self, now: datetime) -> datetime | None:
        """When the window `now` is in closes (its `end`, seconds 0), or `None` when `now`
        is outside every window (or the window is disabled).

        Meant to cap a run's deadline. At the one instant two windows share (`start ==
        end` on consecutive allowed days, at `start`), the later window's end is
        returned. At exactly `end`, that is `now`.
        """
        found = self._around(now)
        return None if found is None else _out(found[1], now)

    def window_start(self, now: datetime) -> datetime | None:
        """When the window `now` is in opened, or `None` outside every window."""
        found = self._around(now)
        return None if found is None else _out(found[0], now)

    def _around(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The (latest-starting) window that contains `now`, as UTC instants."""
        if not self.enabled:
            return None
        moment, zone = _instant(now)
        found = None
        for start, end in self._windows(now, zone):
            if start > moment:
                break
            if moment <= end:
                found = (start, end)
        return found

    def _windows(self, now: datetime, zone: tzinfo) -> Iterator[tuple[datetime, datetime]]:
        """The windows, as (start, end) UTC instants in order, from the one that began
        on the day before `now`'s date on, for two weeks. Times skipped or repeated by
        a DST change are read by `walltime`'s rule; a window that lies wholly inside a
        skipped hour (nothing left of it) does not open that day."""
        today = now.replace(tzinfo=None).date()
        for offset in range(-1, 15):
            day = today + timedelta(days=offset)
            if not self._allowed(day):
                continue
            closes = day + _ONE_DAY if self.crosses_midnight else day
            start = instant(day, self._start, zone)
            end = instant(closes, self._end, zone)
            if start < end:
                yield start, end

    def _allowed(self, day: date) -> bool:
        return day.isoweekday() in self.days


def _instant(now: datetime) -> tuple[datetime, tzinfo]:
    """`now` as a UTC instant, and the zone whose wall clock the windows are read on
    (a naive `now` is read as a wall clock without DST changes)."""
    if not isinstance(now, datetime):
        raise TypeError(f"expected a datetime, got {type(now).__name__}: {now!r}")
    if now.tzinfo is None:
        return now.replace(tzinfo=UTC), UTC
    return now.astimezone(UTC), now.tzinfo


def _out(moment: datetime, now: datetime) -> datetime:
    """A UTC instant in `now`'s terms: naive wall time, or aware in `now`'s tzinfo."""
    if now.tzinfo is None:
        return moment.replace(tzinfo=None)
    return moment.astimezone(now.tzinfo)
