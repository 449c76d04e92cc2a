"""The two drawings of the dashboard, computed here and drawn as inline SVG by the
templates (no chart library: they show with JavaScript off, need no dependency, and
pass the CSP): the actions done and failed per hour, as stacked bars, and a process's
weekly window as a week-long timeline. Each comes with its words, for a table or an
`aria-label`, so that neither needs the picture nor its colours."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from ..schedule import WeeklyWindow


class Hour(Protocol):
    """One hour of `Client.activity` (`models.HourActivity`)."""

    @property
    def hour(self) -> datetime: ...
    @property
    def done(self) -> int: ...
    @property
    def failed(self) -> int: ...


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    done_y: float
    done_height: float
    failed_y: float
    failed_height: float
    label: str  # `14:00`
    done: int
    failed: int


@dataclass(frozen=True, slots=True)
class BarChart:
    width: int
    height: int
    bar_width: float
    bars: tuple[Bar, ...]
    top: int  # the count the full height stands for
    summary: str  # the chart in one sentence
    label_every: int = 3  # an hour's label under every this many bars

    @property
    def empty(self) -> bool:
        return all(bar.done == 0 and bar.failed == 0 for bar in self.bars)

    def resized(self, width: int, height: int, label_every: int) -> BarChart:
        """The same bars drawn `width` by `height`, labelled every `label_every` bars:
        a narrow screen scales the drawing down, so it gets fewer and larger labels."""
        hours = [_Hour(b.label, b.done, b.failed) for b in self.bars]
        return _bars(hours, width, height, label_every, self.summary)


@dataclass(frozen=True, slots=True)
class _Hour:
    label: str
    done: int
    failed: int


def hour_bars(hours: Sequence[Hour], *, width: int = 720, height: int = 120) -> BarChart:
    """Stacked bars, one per hour, oldest first: done at the bottom, failed above."""
    done, failed = sum(h.done for h in hours), sum(h.failed for h in hours)
    summary = (
        f"actions ended in the last {len(hours)} hours (UTC): {done:,} done, {failed:,} failed"
    )
    labelled = [_Hour(h.hour.strftime("%H:00"), h.done, h.failed) for h in hours]
    return _bars(labelled, width, height, 3, summary)


def _bars(
    hours: Sequence[_Hour], width: int, height: int, label_every: int, summary: str
) -> BarChart:
    top = max([h.done + h.failed for h in hours] + [1])
    slot = width / max(len(hours), 1)
    bars = []
    for index, h in enumerate(hours):
        done_height = height * h.done / top
        failed_height = height * h.failed / top
        bars.append(
            Bar(
                x=round(index * slot + slot * 0.1, 2),
                done_y=round(height - done_height, 2),
                done_height=round(done_height, 2),
                failed_y=round(height - done_height - failed_height, 2),
                failed_height=round(failed_height, 2),
                label=h.label,
                done=h.done,
                failed=h.failed,
            )
        )
    bar_width = round(slot * 0.8, 2)
    return BarChart(width, height, bar_width, tuple(bars), top, summary, label_every)


@dataclass(frozen=True, slots=True)
class Span:
    x: float
    width: float
    text: str  # `Sun 01:00-23:30`


@dataclass(frozen=True, slots=True)
class WeekChart:
    width: int
    height: int
    spans: tuple[Span, ...]  # the open hours of this week, Monday to Sunday
    now_x: float
    next_x: float | None  # the next occurrence, when it falls within this week
    is_open: bool
    summary: str

    @property
    def days(self) -> tuple[tuple[float, str], ...]:
        step = self.width / 7
        return tuple((round(i * step, 2), name) for i, name in enumerate(_DAYS))


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEK = timedelta(days=7)


def _label(moment: datetime) -> str:
    return f"{_DAYS[moment.weekday()]} {moment:%H:%M}"


def week_chart(
    window: WeeklyWindow | None,
    now: datetime,
    next_at: datetime | None,
    *,
    width: int = 700,
    height: int = 40,
) -> WeekChart:
    """The week of `now` (aware, on the local wall clock), Monday 00:00 to Monday
    00:00: the open spans of `window` (all of it without a window), `now`, and the next
    occurrence when it falls in this week."""
    start = (now - timedelta(days=now.weekday())).replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + _WEEK

    def x(moment: datetime) -> float:
        seconds = (moment - start).total_seconds()
        return round(max(0.0, min(1.0, seconds / _WEEK.total_seconds())) * width, 2)

    spans: list[Span] = []
    if window is None:
        spans.append(Span(0, width, "all week"))
    else:
        moment = start
        while window.enabled and moment < end:
            opens = window.next_occurrence(moment)
            if opens is None or opens >= end:
                break
            closes = window.window_end(opens) or end
            shown_end = min(closes, end)
            spans.append(Span(x(opens), x(shown_end) - x(opens), f"{_label(opens)}-{closes:%H:%M}"))
            moment = max(closes, opens) + timedelta(minutes=1)
    is_open = window is None or window.contains(now)
    next_x = x(next_at) if next_at is not None and start <= next_at < end else None
    opened = "open " + "; ".join(s.text for s in spans) if spans else "never open this week"
    nxt = f"; next occurrence {_label(next_at)}" if next_at is not None else "; no next occurrence"
    summary = f"{opened}; now {_label(now)}, {'open' if is_open else 'closed'}{nxt}"
    return WeekChart(width, height, tuple(spans), x(now), next_x, is_open, summary)
