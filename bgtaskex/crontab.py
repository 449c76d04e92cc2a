"""The APScheduler 3 trigger of a `cron` process, with crontab's rules.

Imported only when a trigger is needed (the daemon, `bgtaskex processes`): it imports
APScheduler.

* **Day of month or day of week.** When both fields are restricted (neither starts with
  `*`), crontab fires on a day that matches either; APScheduler's `CronTrigger` needs
  both. Such an expression becomes an `OrTrigger` of two `CronTrigger`s, one per field.
* **Wall clock first.** Fire times are computed on naive wall-clock times (APScheduler's
  triggers in UTC, which has no DST: a day is a day), then each wall-clock time is mapped
  to an instant. (APScheduler's `CronTrigger` in a zone with DST adds a day as 24 hours of
  real time, and so passed over hour 0 of the day after a 23-hour day.)
* **DST.** A fire time the clock skips moves forward to the moment the clock jumps to
  (`walltime`'s rule; several such times fire once). A fixed-time expression (neither
  minute nor hour starts with `*`) fires once on fall-back night, at the first of the
  repeated wall-clock times, as crontab does (the second pass of the repeated period is
  passed over at once, however many fire times it holds); an expression with `*` in its
  minute or hour keeps firing through the repeated hour.

Fire times are returned as aware datetimes in the trigger's zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from .walltime import repeat_end, wall_instant

__all__ = ["CrontabTrigger"]

_TICK = timedelta(microseconds=1)


class CrontabTrigger(BaseTrigger):  # type: ignore[misc]
    """A 5-field crontab expression's trigger in `zone`, by crontab's rules (see the
    module docstring). `fields` are `processes.cron_fields`' APScheduler fields."""

    def __init__(self, expression: str, fields: tuple[str, str, str, str, str], zone: tzinfo):
        parts = expression.split()
        self.expression = expression
        self.zone = zone
        self.fixed_time = not parts[0].startswith("*") and not parts[1].startswith("*")
        self._fields = fields
        self._either = not parts[2].startswith("*") and not parts[4].startswith("*")
        self.inner: Any = self._cron()  # on the wall clock: naive times read as UTC

    def _cron(self) -> Any:
        """APScheduler's trigger of the fields on the wall clock (UTC standing for it);
        when both days are restricted, an `OrTrigger` of one `CronTrigger` per day field
        (either matches)."""
        minute, hour, day, month, day_of_week = self._fields

        def cron(day: str, day_of_week: str) -> Any:
            return CronTrigger(
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=day_of_week,
                timezone=UTC,
            )

        if not self._either:
            return cron(day, day_of_week)
        return OrTrigger([cron(day, "*"), cron("*", day_of_week)])

    def next_wall(self, wall: datetime) -> datetime | None:
        """The first naive wall-clock time at or after `wall` that the expression names
        (None: none, for an expression that never fires)."""
        fire = self.inner.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        return None if fire is None else fire.replace(tzinfo=None)

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        """The first fire time strictly after `previous_fire_time` and at or after `now`."""
        after = now.astimezone(UTC)
        if previous_fire_time is not None:
            after = max(after, previous_fire_time.astimezone(UTC) + _TICK)
        try:
            fire = self._first_at_or_after(after)
        except OverflowError:  # past year 9999 (in UTC or on the wall clock): never
            return None
        return None if fire is None else fire.astimezone(self.zone)

    def _first_at_or_after(self, after: datetime) -> datetime | None:
        """The first fire instant (UTC) at or after the instant `after`. Wall-clock times
        name instants by `walltime`'s rule (first pass, or the jump), which never goes
        backward; the second pass of a repeated period adds instants for an expression
        with `*` in its minute or hour."""
        reading = after.astimezone(self.zone)
        shown = reading.replace(tzinfo=None)
        first = shown.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = shown.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first >= second:  # shown once: the first wall-clock time from there on
            return self._instant(self.next_wall(shown))
        # `after` is in a repeated period, walls [start, end): its first or second pass.
        end_at = repeat_end(shown, self.zone) or after
        end = end_at.astimezone(self.zone).replace(tzinfo=None)
        start = end - (second - first)
        in_second_pass = after >= second
        wall = self.next_wall(shown)
        if wall is None or wall >= end:  # none left in this pass of the period
            if self.fixed_time or in_second_pass:
                return self._instant(self.next_wall(max(shown, end)))
            again = self.next_wall(start)  # the second pass, from its start
            if again is not None and again < end:
                return self._second(again)
            return self._instant(wall)
        if in_second_pass:
            if self.fixed_time:  # run at the first pass, not again
                return self._instant(self.next_wall(end))
            return self._second(wall)
        return self._instant(wall)

    def _instant(self, wall: datetime | None) -> datetime | None:
        return None if wall is None else wall_instant(wall, self.zone)

    def _second(self, wall: datetime) -> datetime:
        return wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)

    def __str__(self) -> str:
        return f"crontab[{self.expression}]"
