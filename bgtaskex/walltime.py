"""Wall-clock times and the instants they name: the one DST rule of every schedule.

Schedules are written in wall-clock time (a window's `01:00-05:30`, a cron's `8 4 * * *`)
and computed on aware instants (UTC). A wall-clock time names an instant by one rule:

* a time the clock skips (spring forward) moves forward to the moment the clock jumps
  to: in Paris on 2026-03-29, 02:30 means 03:00 CEST (01:00 UTC);
* a time the clock shows twice (fall back) counts once, at its first occurrence: in
  New York on 2026-11-01, 01:30 means 01:30 EDT (05:30 UTC).

The mapping never goes backward (a later wall-clock time names the same or a later
instant). The local zone is the machine's, as APScheduler reads it (`tzlocal`).

Standard library only, except `local_zone`, which imports `tzlocal` when called.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta, tzinfo

__all__ = ["instant", "local_now", "local_zone", "repeat_end", "wall_instant"]

_SECOND = timedelta(seconds=1)


def local_zone() -> tzinfo:
    """The machine's time zone with its DST rules (a `ZoneInfo`), never a fixed offset;
    UTC when it cannot be read."""
    try:
        from tzlocal import get_localzone

        return get_localzone()
    except Exception:  # an unreadable zone is UTC, as for APScheduler
        return UTC


def local_now(zone: tzinfo | None = None) -> datetime:
    """Now, aware, read on the wall clock of `zone` (default: the local zone)."""
    return datetime.now(zone or local_zone())


def instant(day: date, moment: time, zone: tzinfo) -> datetime:
    """The instant (in UTC) that wall-clock `moment` on `day` names in `zone`, by the
    module's rule (skipped: the end of the jump; repeated: the first occurrence)."""
    return wall_instant(datetime.combine(day, moment), zone)


def wall_instant(wall: datetime, zone: tzinfo) -> datetime:
    """The instant (in UTC) that the naive wall-clock time `wall` names in `zone`."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first <= second:
        return first  # exists; a repeated time is its first occurrence
    # Skipped: fold=1 reads it with the offset after the jump (an instant before it),
    # fold=0 with the offset before (an instant after it). The jump lies in between.
    before = second.astimezone(zone).utcoffset()
    low, high = second, first
    while high - low > _SECOND:
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == before:
            low = middle
        else:
            high = middle
    return low.replace(microsecond=0) + _SECOND  # zones change offset on whole seconds


def repeat_end(wall: datetime, zone: tzinfo) -> datetime | None:
    """For a naive wall-clock time `wall` that the clock of `zone` shows twice (fall
    back): the instant (in UTC) its second pass ends, when the clock again shows a time it
    had not shown before (in New York on 2026-11-01, 01:00-02:00 repeats: 02:00 EST, 07:00
    UTC). None for a time shown once or never."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first >= second:
        return None
    # The clock went back (second - first) at an instant between the two passes; the
    # second pass lasts that long from there.
    after = second.astimezone(zone).utcoffset()
    low, high = first, second
    while high - low > _SECOND:
        middle = low + (high - low) / 2
        if middle.astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    change = low.replace(microsecond=0) + _SECOND  # zones change offset on whole seconds
    return change + (second - first)
