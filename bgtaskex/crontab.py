"""The APScheduler 3 trigger of a `cron` process, with crontab's rules.

Imported only when a trigger is needed (the daemon, `bgtaskex processes`): it imports
APScheduler.

* **Day of month or day of week.** When both fields are restricted (neither starts with
  `*`), crontab fires on a day that matches either; APScheduler's `CronTrigger` needs
  both. Such an expression becomes an `OrTrigger` of two `CronTrigger`s, one per field.
* **DST.** A fire time the clock skips moves forward to the moment the clock jumps to
  (`walltime`'s rule; several such times fire once). A fixed-time expression (neither
  minute nor hour starts with `*`) fires once on fall-back night, at the first of the
  repeated wall-clock times, as crontab does (the second pass of the repeated period is
  passed over at once, however many fire times it holds); an expression with `*` in its
  minute or hour keeps firing through the repeated hour.

Fire times are returned as aware datetimes in the trigger's zone.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger

from .walltime import forward_jump, repeat_end, wall_instant

__all__ = ["CrontabTrigger"]

_TICK = timedelta(microseconds=1)
_SECOND = timedelta(seconds=1)
_DAY = timedelta(days=1)  # how far a skipped time is looked for (one jump a day at most)
_MAX_PASSES = 8  # passes over in one call: a fire time, or a repeated period's second pass


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
        self.inner: Any = self._cron(zone)

    def _cron(self, zone: tzinfo) -> Any:
        """APScheduler's trigger of the fields in `zone`; when both days are restricted,
        an `OrTrigger` of one `CronTrigger` per day field (either matches)."""
        minute, hour, day, month, day_of_week = self._fields

        def cron(day: str, day_of_week: str) -> Any:
            return CronTrigger(
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=day_of_week,
                timezone=zone,
            )

        if not self._either:
            return cron(day, day_of_week)
        return OrTrigger([cron(day, "*"), cron("*", day_of_week)])

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
        if previous_fire_time is not None and now.astimezone(UTC) < previous_fire_time.astimezone(
            UTC
        ):
            now = previous_fire_time  # the next one after it, however `now` was given
        fire = self.inner.get_next_fire_time(previous_fire_time, now)
        after = previous_fire_time or now - _TICK
        for _ in range(_MAX_PASSES):
            if fire is None:
                return None
            moment = self._moment(fire)
            if moment is not None and moment > after:
                return self._skipped_before(after, moment).astimezone(self.zone)
            if moment is None:  # a second pass: jump past it, however many times it holds
                end = repeat_end(fire.replace(tzinfo=None), self.zone) or fire
                fire = self.inner.get_next_fire_time(None, end.astimezone(self.zone))
            else:
                fire = self.inner.get_next_fire_time(fire, fire)  # pass over this one
        # Only a zone going back more than _MAX_PASSES times in a row gets here: rather the
        # trigger's own time (a repeated one may run twice) than None, which drops the job.
        return None if fire is None else fire.astimezone(self.zone)  # pragma: no cover

    def _skipped_before(self, after: datetime, moment: datetime) -> datetime:
        """`moment`, or the instant the clock jumps forward between `after` and it when a
        wall-clock time the jump skips matches: walking from a time before the jump,
        APScheduler reads a skipped time as one after the jump, and passes over it."""
        jump = forward_jump(after, min(moment, after + _DAY), self.zone)
        if jump is None or jump >= moment:
            return moment
        before = (jump - _SECOND).astimezone(self.zone).utcoffset()
        later = jump.astimezone(self.zone).utcoffset()
        if before is None or later is None:  # pragma: no cover - a zone has offsets
            return moment
        # The skipped times, read on the clock as if it had not jumped: [jump, jump + size).
        unjumped = timezone(before)
        skipped = self._cron(unjumped).get_next_fire_time(None, jump.astimezone(unjumped))
        if skipped is not None and skipped.astimezone(UTC) < jump + (later - before):
            return jump
        return moment

    def _moment(self, fire: datetime) -> datetime | None:
        """The instant (UTC) `fire` stands for: itself, the end of the jump for a
        skipped wall-clock time, None for a fixed time's second pass on fall-back night."""
        wall = fire.replace(tzinfo=None)
        first = wall.replace(tzinfo=self.zone, fold=0).astimezone(UTC)
        second = wall.replace(tzinfo=self.zone, fold=1).astimezone(UTC)
        if first > second:  # skipped
            return wall_instant(wall, self.zone)
        actual = fire.astimezone(UTC)
        if first < second and actual == second and self.fixed_time:
            return None  # crontab runs a fixed time once when the clock repeats it
        return actual

    def __str__(self) -> str:
        return f"crontab[{self.expression}]"
