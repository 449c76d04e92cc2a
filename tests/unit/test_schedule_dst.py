"""Schedules across DST changes (issue #14, part 7), in Europe/Paris and America/New_York
(cron times also in Lord Howe, and for weeks after each change in zones that change at
midnight), spring forward and fall back: one rule for window edges in a skipped or
repeated hour (checked minute by minute against a brute-force reference),
`next_occurrence` bounded and never in the past, a fixed-time cron once on fall-back
night, the deadline cap."""

from __future__ import annotations

import io
import struct
import time as clock
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
import tzlocal

from bgtaskex import plan as plan_module
from bgtaskex.config import Settings
from bgtaskex.plan import RunPlan
from bgtaskex.processes import Process
from bgtaskex.schedule import WeeklyWindow
from bgtaskex.walltime import local_now, wall_instant

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")
# (zone, the day of the change, the UTC instant of the change)
TRANSITIONS = [
    (PARIS, date(2026, 3, 29), datetime(2026, 3, 29, 1, 0, tzinfo=UTC)),  # 02:00 -> 03:00
    (PARIS, date(2026, 10, 25), datetime(2026, 10, 25, 1, 0, tzinfo=UTC)),  # 03:00 -> 02:00
    (NEW_YORK, date(2026, 3, 8), datetime(2026, 3, 8, 7, 0, tzinfo=UTC)),  # 02:00 -> 03:00
    (NEW_YORK, date(2026, 11, 1), datetime(2026, 11, 1, 6, 0, tzinfo=UTC)),  # 02:00 -> 01:00
]
EDGES = [
    ("01:00", "02:30"),  # ends in the spring gap
    ("02:30", "04:00"),  # starts in the gap
    ("02:10", "02:50"),  # wholly in the gap (and, in Paris, in the repeated hour)
    ("01:15", "01:45"),  # wholly in New York's repeated hour
    ("02:15", "02:45"),
    ("01:30", "03:00"),
    ("23:00", "02:30"),  # crosses midnight, ends in the gap
    ("02:30", "02:30"),  # 24 hours
    ("03:00", "01:30"),
    ("00:00", "00:00"),
]


def utc(moment: datetime | None) -> datetime | None:
    """As a UTC instant: `==` between zones is always False for a time in a repeated
    hour (PEP 495), and within a zone it compares wall-clock readings."""
    return None if moment is None else moment.astimezone(UTC)


def _reference(zone: ZoneInfo, change: datetime):  # type: ignore[no-untyped-def]
    """The rule, by brute force: a wall-clock time names the first minute at which the
    clock shows that time or later."""
    minutes = [change + timedelta(minutes=m) for m in range(-3 * 1440, 3 * 1440)]
    walls = [m.astimezone(zone).replace(tzinfo=None) for m in minutes]

    def named(wall: datetime) -> datetime:
        if abs(wall - change.replace(tzinfo=None)) > timedelta(days=2):
            return wall.replace(tzinfo=zone).astimezone(UTC)  # no change near: plain
        return next(m for m, w in zip(minutes, walls, strict=True) if w >= wall)

    return named


def _reference_windows(window: WeeklyWindow, named, day: date) -> list[tuple[datetime, datetime]]:  # type: ignore[no-untyped-def]
    start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
    found = []
    for offset in range(-2, 10):
        d = day + timedelta(days=offset)
        if d.isoweekday() not in window.days:
            continue
        closes = d + timedelta(days=1) if start >= end else d
        s, e = named(datetime.combine(d, start)), named(datetime.combine(closes, end))
        if s < e:
            found.append((s, e))
    return found


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("zone", "day", "change"), TRANSITIONS)
def test_window_edges_around_dst_changes_follow_one_rule(
    zone: ZoneInfo, day: date, change: datetime
) -> None:
    named = _reference(zone, change)
    for days in ("mon-sun", "sun"):
        for start, end in EDGES:
            window = WeeklyWindow(days, start, end)
            spans = _reference_windows(window, named, day)
            for minute in range(-5 * 60, 5 * 60):
                moment = change + timedelta(minutes=minute)
                now = moment.astimezone(zone)
                inside = [(s, e) for s, e in spans if s <= moment <= e]
                where = (str(window), now.isoformat())
                assert window.contains(now) is bool(inside), where
                nxt = window.next_occurrence(now)
                assert nxt is not None and utc(nxt) >= utc(now), where
                expected = now if inside else min(s for s, _ in spans if s > moment)
                assert utc(nxt) == utc(expected), where
                end_at = window.window_end(now)
                assert utc(end_at) == (inside[-1][1] if inside else None), where
                if end_at is not None:
                    assert utc(window.window_start(now)) == inside[-1][0], where


def test_the_rule_on_examples() -> None:
    spring = datetime(2026, 3, 29, 1, 45, tzinfo=PARIS)
    # 02:30 does not exist that night: it means 03:00 CEST, the moment the clock jumps to
    assert WeeklyWindow("sun", "01:00", "02:30").window_end(spring) == datetime(
        2026, 3, 29, 3, 0, tzinfo=PARIS
    )
    assert WeeklyWindow("sun", "02:30", "04:00").next_occurrence(spring) == datetime(
        2026, 3, 29, 3, 0, tzinfo=PARIS
    )
    # wholly in the gap: it does not open that night (next Sunday)
    nxt = WeeklyWindow("sun", "02:10", "02:50").next_occurrence(spring)
    assert nxt == datetime(2026, 4, 5, 2, 10, tzinfo=PARIS)
    # New York's 01:15-01:45 on fall-back night: once, the first time round (EDT)
    fall = datetime(2026, 11, 1, 1, 20, tzinfo=NEW_YORK)  # fold=0: EDT
    window = WeeklyWindow("sun", "01:15", "01:45")
    assert window.contains(fall) and not window.contains(fall.replace(fold=1))


PARIS_FALL = datetime(2026, 10, 25, 1, 0, tzinfo=UTC)


@pytest.mark.timeout(60)
def test_process_next_occurrence_is_bounded_and_never_in_the_past() -> None:
    starts = ("02:00", "02:30", "02:45", "03:00")
    ends = ("02:15", "02:45", "03:00", "03:30")
    processes = [
        Process("p", cron=cron, every=every, window=WeeklyWindow("sun", start, end))
        for start in starts
        for end in ends
        for cron, every in (("30 2 * * *", None), ("*/15 * * * *", None), (None, 3600.0))
    ]
    for process in processes:
        for minutes in (-90, -20, 0, 25, 70):
            now = (PARIS_FALL + timedelta(minutes=minutes)).astimezone(PARIS)
            began = clock.monotonic()
            nxt = process.next_occurrence(now, PARIS)
            assert clock.monotonic() - began < 2
            where = (process.describe_trigger(), now.isoformat())
            assert nxt is None or (utc(nxt) >= utc(now) and process.window.contains(nxt)), where  # type: ignore[union-attr]


@pytest.mark.timeout(10)
def test_next_occurrence_moves_forward_whatever_the_trigger(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """APScheduler's own CronTrigger gives 02:30 twice on fall-back night; the second
    (CET) is not inside 02:45-03:00 by the wall clock, and `fire + 1 s` (fold lost) led
    back to 02:45 CEST, then to 02:30 CET again, forever."""
    from apscheduler.triggers.cron import CronTrigger

    plain = CronTrigger(minute=30, hour=2, timezone=PARIS)
    monkeypatch.setattr(Process, "trigger", lambda self, zone=None: plain)
    process = Process("p", cron="30 2 * * *", window=WeeklyWindow("sun", "02:45", "03:00"))
    now = datetime(2026, 10, 25, 2, 20, tzinfo=PARIS, fold=1)  # 02:20 CET, second pass
    nxt = process.next_occurrence(now, PARIS)
    # the window is 02:45 CEST to 03:00 CET, real time: 02:30 CET is inside it
    assert nxt is not None and utc(nxt) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    assert utc(nxt) >= utc(now)  # type: ignore[operator]


def test_sunday_window_with_a_cron_in_the_repeated_hour_does_not_spin() -> None:
    process = Process("p", cron="30 2 * * *", window=WeeklyWindow("sun", "02:45", "03:00"))
    now = datetime(2026, 10, 25, 2, 40, tzinfo=PARIS, fold=1)
    nxt = process.next_occurrence(now, PARIS)
    assert nxt is None  # 02:30 is never inside 02:45-03:00 (its second pass is not a tick)
    hourly = Process("p", cron="30 * * * *", window=WeeklyWindow("sun", "02:45", "03:00"))
    nxt = hourly.next_occurrence(datetime(2026, 10, 24, 12, tzinfo=PARIS), PARIS)
    # the window is 02:45 CEST to 03:00 CET; 02:30 CET is inside it
    assert nxt == datetime(2026, 10, 25, 2, 30, tzinfo=PARIS, fold=1)
    assert nxt.astimezone(UTC) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)


def _fires(cron: str, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    trigger = Process("p", cron=cron).trigger(zone)
    fires, fire = [], None
    for _ in range(count):
        fire = trigger.get_next_fire_time(fire, after)
        fires.append(fire.astimezone(UTC))
    return fires


def test_a_fixed_time_cron_runs_once_on_fall_back_night() -> None:
    after = datetime(2026, 10, 31, 12, tzinfo=NEW_YORK)
    assert _fires("8 1 * * *", NEW_YORK, after, 2) == [
        datetime(2026, 11, 1, 5, 8, tzinfo=UTC),  # 01:08 EDT; 01:08 EST is not run again
        datetime(2026, 11, 2, 6, 8, tzinfo=UTC),
    ]
    # a `*` in the hour or minute keeps the cadence through the repeated hour (crontab)
    every_20 = _fires("*/20 1 * * *", NEW_YORK, after, 6)
    assert [f - every_20[0] for f in every_20] == [
        timedelta(minutes=m) for m in (0, 20, 40, 60, 80, 100)
    ]


def test_a_cron_in_the_spring_gap_runs_once_when_the_clock_jumps() -> None:
    after = datetime(2026, 3, 28, 12, tzinfo=PARIS)
    assert _fires("15,45 2 * * *", PARIS, after, 2) == [
        datetime(2026, 3, 29, 1, 0, tzinfo=UTC),  # 03:00 CEST, once for both
        datetime(2026, 3, 30, 0, 15, tzinfo=UTC),
    ]


def test_deadline_cap_across_dst_changes() -> None:
    settings = Settings()
    spring = Process("p", every=60, window=WeeklyWindow("sun", "00:00", "02:30"))
    now = datetime(2026, 3, 29, 1, 30, tzinfo=PARIS)
    assert (
        RunPlan.of(settings, spring, now=now).not_after
        == datetime(2026, 3, 29, 1, 0, tzinfo=UTC).timestamp()
    )
    fall = Process("p", every=60, window=WeeklyWindow("sun", "00:00", "04:00"))
    now = datetime(2026, 10, 25, 1, 30, tzinfo=PARIS)
    assert (
        RunPlan.of(settings, fall, now=now).not_after
        == datetime(2026, 10, 25, 3, 0, tzinfo=UTC).timestamp()
    )


def test_the_plan_reads_the_clock_in_the_local_zone_with_its_dst_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    night = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 01:30 CET
    monkeypatch.setattr(plan_module, "local_now", lambda: night.astimezone(PARIS))
    spring = Process("p", every=60, window=WeeklyWindow("sun", "01:00", "04:00"))
    # 04:00 CEST: 2.5 hours of wall clock, 1.5 real hours later
    assert RunPlan.of(Settings(), spring).not_after == night.timestamp() + 1.5 * 3600
    monkeypatch.setenv("TZ", "Europe/Paris")
    tzlocal.reload_localzone()
    try:
        zone = local_now().tzinfo
        winter = datetime(2026, 1, 1, tzinfo=zone).utcoffset()
        assert winter != datetime(2026, 7, 1, tzinfo=zone).utcoffset()  # not a fixed offset
    finally:
        monkeypatch.undo()
        tzlocal.reload_localzone()


def test_wall_instant_rule() -> None:
    assert wall_instant(datetime(2026, 3, 29, 2, 30), PARIS) == datetime(
        2026, 3, 29, 1, 0, tzinfo=UTC
    )
    assert wall_instant(datetime(2026, 11, 1, 1, 30), NEW_YORK) == datetime(
        2026, 11, 1, 5, 30, tzinfo=UTC
    )
    assert wall_instant(datetime(2026, 7, 1, 12, 0), PARIS) == datetime(
        2026, 7, 1, 10, 0, tzinfo=UTC
    )


LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # its clock changes by 30 minutes
CHANGES = [(zone, change) for zone, _, change in TRANSITIONS] + [
    (LORD_HOWE, datetime(2026, 4, 4, 15, 0, tzinfo=UTC)),  # 02:00 -> 01:30
    (LORD_HOWE, datetime(2026, 10, 3, 15, 30, tzinfo=UTC)),  # 02:00 -> 02:30
]
CRONS = [
    "0-11 2 * * *",  # fixed: 12 times in Paris's repeated hour (issue #14, attack 08)
    "0-59/5 1 * * *",
    "0-59 0-23 * * *",  # every minute, written without `*`: fixed by crontab's rule
    "15,45 1,2 * * *",
    "*/7 1,2 * * *",  # `*`: keeps its cadence through the repeated hour
    "0-59 */1 * * *",
]


def _values(text: str, high: int) -> set[int]:
    values: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        first, last = (0, high) if span == "*" else map(int, (span + "-" + span).split("-")[:2])
        values.update(range(first, last + 1, int(step or 1)))
    return values


def _crontab_fires(cron: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Crontab's times, minute by minute of real time: a skipped wall-clock time fires
    when the clock jumps, a repeated one fires again only if minute or hour has a `*`."""
    minute, hour = cron.split()[:2]
    minutes, hours = _values(minute, 59), _values(hour, 23)
    fixed = not minute.startswith("*") and not hour.startswith("*")

    def matches(wall: datetime) -> bool:
        return wall.minute in minutes and wall.hour in hours

    fires, seen, last = [], set(), None
    moment = start
    while moment < end:
        wall = moment.astimezone(zone).replace(tzinfo=None)
        skipped = []
        if last is not None:
            skipped = [last + timedelta(minutes=m) for m in range(1, (wall - last) // MINUTE)]
        if any(map(matches, skipped)) or (matches(wall) and not (fixed and wall in seen)):
            fires.append(moment)
        seen.add(wall)
        last, moment = wall, moment + MINUTE
    return fires


MINUTE = timedelta(minutes=1)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("zone", "change"), CHANGES)
def test_cron_fire_times_across_dst_changes_match_crontab_minute_by_minute(
    zone: ZoneInfo, change: datetime
) -> None:
    """Never None (a dropped job) however many fixed times the repeated period holds; a
    skipped time fires at the jump, also right after a run before it (`15,45 1,2`)."""
    start, end = change - timedelta(hours=26), change + timedelta(hours=26)
    for cron in CRONS:
        trigger = Process("p", cron=cron).trigger(zone)
        got: list[datetime] = []
        fire = trigger.get_next_fire_time(None, start.astimezone(zone))
        while fire is not None and fire.astimezone(UTC) < end:
            got.append(fire.astimezone(UTC))
            fire = trigger.get_next_fire_time(fire, fire)
        assert fire is not None, (cron, str(zone), got[-1:])
        assert got == _crontab_fires(cron, zone, start, end), (cron, str(zone))
        # from any minute of the repeated period, the next time is found (not "never")
        for minutes in range(0, 60, 7):
            now = (change + timedelta(minutes=minutes)).astimezone(zone)
            nxt = Process("p", cron=cron).next_occurrence(now, zone)
            assert nxt is not None and utc(nxt) >= utc(now), (cron, now.isoformat())


def zone_going_back(at: datetime, before: int = 7200, after: int = 3600) -> ZoneInfo:
    """A zone (in-memory TZif) whose clock goes back from UTC+`before` to UTC+`after`
    seconds at `at`: a repeated period at the real time of the test."""
    names = b"FDT\0FST\0"

    def block(time_format: str) -> bytes:
        head = b"TZif2" + b"\0" * 15 + struct.pack(">6l", 0, 0, 0, 1, 2, len(names))
        return (
            head
            + struct.pack(time_format, int(at.timestamp()))
            + b"\1"  # the transition's type: the second
            + struct.pack(">lBB", before, 0, 0)  # not DST: zoneinfo uses it before `at`
            + struct.pack(">lBB", after, 0, 4)
            + names
        )

    hours, minutes = divmod(after // 60, 60)
    footer = f"\n<FST>-{hours}:{minutes:02d}\n".encode()
    return ZoneInfo.from_file(io.BytesIO(block(">l") + block(">q") + footer), key="Fake/Back")


def test_an_interval_next_time_in_the_repeated_hour_is_not_in_the_past() -> None:
    """`bgtaskex processes` during a repeated hour (attack 09 of #14): the time an `every`
    process next runs kept its wall-clock reading but lost its fold, an hour early."""
    zone = zone_going_back(datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
    now = datetime.now(zone)
    assert now.fold == 1  # the second pass
    for process in (
        Process("p", every=300.0),
        Process("p", every=300.0, window=WeeklyWindow("mon-sun", "00:00", "00:00")),
        Process("p", cron="*/5 * * * *"),
    ):
        nxt = process.next_occurrence(now, zone)
        assert nxt is not None and nxt.tzinfo is zone, process
        assert now <= nxt.astimezone(UTC) <= now.astimezone(UTC) + timedelta(seconds=301), process


# -- days and weeks after each change, in zones that change at midnight too ------------

DST_ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Australia/Lord_Howe",  # 30 minutes, at 02:00
    "America/Havana",  # at midnight: 00:00 -> 01:00, 01:00 -> 00:00
    "America/Santiago",  # 24:00 -> 01:00 (Sunday), 24:00 -> 23:00
    "Asia/Beirut",
    "Africa/Cairo",  # on a Friday
    "Europe/London",
]
# the zone's two changes in 2026, and Paris's spring 2024 (March 31: April 1 follows a
# 23-hour day, and `0 0 1 * *` lost April, attack 2 of #14, finding 01)
YEARS = [(name, 2026) for name in DST_ZONES] + [("Europe/Paris", 2024)]


def _changes(zone: ZoneInfo, year: int) -> list[datetime]:
    """The instants (UTC) at which the clock of `zone` changes offset in `year`."""
    found = []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    while moment.year == year:
        later = moment + timedelta(hours=1)
        if moment.astimezone(zone).utcoffset() != later.astimezone(zone).utcoffset():
            low, high = moment, later
            while high - low > timedelta(seconds=1):
                middle = low + (high - low) / 2
                same = middle.astimezone(zone).utcoffset() == moment.astimezone(zone).utcoffset()
                low, high = (middle, high) if same else (low, middle)
            found.append(high)
        moment = later
    return found


AROUND = [
    (zone, change)
    for name, year in YEARS
    for zone in [ZoneInfo(name)]
    for change in _changes(zone, year)
    if year == 2026 or change.month < 6
]


def _crons_around(day: date) -> list[str]:
    """Daily, weekly and monthly crons at 00:00 and in the hours that DST changes skip or
    repeat in DST_ZONES (00, 01, 02, 23), for the change on local date `day`."""
    days = [day + timedelta(days=n) for n in (-1, 0, 1)]
    week = [d.isoweekday() % 7 for d in days]
    return [
        "0 0 * * *",
        "15 0 * * *",
        "45 1 * * *",
        "15 2 * * *",
        "30 23 * * *",
        "0 0 * * 1-5",
        "*/20 0-2,23 * * *",  # `*`: both passes of a repeated hour
        *(f"0 0 * * {w}" for w in week),
        f"30 0 * * {week[1]}",
        f"15 2 * * {week[1]}",
        f"45 1 * * {week[1]}",
        f"0 23 * * {week[0]}",
        "0 0 1 * *",
        *(f"0 0 {d.day} * *" for d in days),
        f"30 1 {day.day} * *",
    ]


def _matcher(cron: str):  # type: ignore[no-untyped-def]
    """crontab's match of a naive wall-clock time (numbers, `*`, ranges, lists, steps)."""
    texts = cron.split()
    minutes, hours, days, months = (
        _values(t, h) for t, h in zip(texts[:4], (59, 23, 31, 12), strict=True)
    )
    weekdays = {w % 7 for w in _values(texts[4], 7)}
    days.discard(0)
    months.discard(0)
    if texts[2] == "*":
        days = set(range(1, 32))
    if texts[3] == "*":
        months = set(range(1, 13))
    either = not texts[2].startswith("*") and not texts[4].startswith("*")

    def matches(wall: datetime) -> bool:
        if wall.minute not in minutes or wall.hour not in hours or wall.month not in months:
            return False
        in_month, in_week = wall.day in days, wall.isoweekday() % 7 in weekdays
        return (in_month or in_week) if either else (in_month and in_week)

    return matches


def _clock(zone: ZoneInfo, start: datetime, end: datetime):  # type: ignore[no-untyped-def]
    """Each real minute in [start, end): (instant, wall-clock reading, the wall-clock
    minutes the clock skipped just before it, whether the reading was shown before)."""
    rows, seen, last = [], set(), None
    moment = start
    while moment < end:
        wall = moment.astimezone(zone).replace(tzinfo=None)
        skipped = []
        if last is not None:
            skipped = [last + timedelta(minutes=m) for m in range(1, (wall - last) // MINUTE)]
        rows.append((moment, wall, skipped, wall in seen))
        seen.add(wall)
        last, moment = wall, moment + MINUTE
    return rows


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("zone", "change"), AROUND, ids=lambda v: str(v)[:16])
def test_daily_weekly_monthly_crons_days_and_weeks_after_a_change_match_crontab(
    zone: ZoneInfo, change: datetime
) -> None:
    """From a week before a change to two weeks after, minute by minute of real time: the
    chain of fire times (as the daemon asks: after the previous one) and the next time
    from any `now` (as `bgtaskex processes` asks) are crontab's. Hour 0 of the day after
    a 23-hour day was passed over (a day, a week, a month lost), and a weekly time that a
    midnight change skips lost a week (attack 2 of #14, findings 01 and 02)."""
    start, end = change - timedelta(days=8), change + timedelta(days=15)
    rows = _clock(zone, start, end)
    by_minute: dict[int, list[int]] = {m: [] for m in range(60)}
    for index, (_, wall, *_) in enumerate(rows):
        by_minute[wall.minute].append(index)
    jumps = [index for index, (_, _, skipped, _) in enumerate(rows) if skipped]
    near = [change + timedelta(minutes=m) for m in range(-180, 180, 11)]
    nows = [moment for moment, *_ in rows[:: 13 * 60 + 7]] + near
    day = (change + timedelta(hours=1)).astimezone(zone).date()
    for cron in _crons_around(day):
        matches = _matcher(cron)
        fixed = not cron.startswith("*")
        minutes = _values(cron.split()[0], 59)
        candidates = sorted({*jumps, *(i for m in minutes for i in by_minute[m])})
        expected = [
            moment
            for moment, wall, skipped, seen in map(rows.__getitem__, candidates)
            if any(map(matches, skipped)) or (matches(wall) and not (fixed and seen))
        ]
        trigger = Process("p", cron=cron).trigger(zone)
        got: list[datetime] = []
        fire = trigger.get_next_fire_time(None, start.astimezone(zone))
        while fire is not None and fire.astimezone(UTC) < end:
            got.append(fire.astimezone(UTC))
            fire = trigger.get_next_fire_time(fire, fire)
        assert got == expected, (cron, str(zone))
        for moment in nows:  # `now`, all round the clock and through the change
            nxt = trigger.get_next_fire_time(None, moment.astimezone(zone))
            want = next((e for e in expected if e >= moment), None)
            assert want is None or utc(nxt) == want, (cron, moment.astimezone(zone).isoformat())


def test_the_day_after_a_short_day_and_midnight_changes_on_examples() -> None:
    """Attack 2 of #14, findings 01 and 02, as the daemon asks (after the last run) and as
    `bgtaskex processes` shows it."""

    def after(cron: str, name: str, previous: datetime) -> datetime:
        zone = ZoneInfo(name)
        fire = Process("p", cron=cron).trigger(zone).get_next_fire_time(previous, previous)
        return fire.astimezone(zone).replace(tzinfo=None)

    sunday = datetime(2026, 3, 29, tzinfo=PARIS)  # 23 hours long
    assert after("0 0 * * *", "Europe/Paris", sunday) == datetime(2026, 3, 30)
    assert after("0 0 * * 1", "Europe/Paris", datetime(2026, 3, 23, tzinfo=PARIS)) == datetime(
        2026, 3, 30
    )
    assert after(
        "0 0 1 * *", "Europe/London", datetime(2024, 3, 1, tzinfo=ZoneInfo("Europe/London"))
    ) == datetime(2024, 4, 1)
    havana = ZoneInfo("America/Havana")
    assert after("0 0 * * 0", "America/Havana", datetime(2026, 3, 1, tzinfo=havana)) == datetime(
        2026, 3, 8, 1, 0
    )  # 00:00 is skipped on March 8: the jump, 01:00 CDT
    weekly = Process("p", cron="0 0 * * 1")
    shown = weekly.next_occurrence(datetime(2026, 3, 28, 12, tzinfo=PARIS), PARIS)
    assert shown == datetime(2026, 3, 30, tzinfo=PARIS)  # `processes` (was April 6)


def test_a_cron_time_past_year_9999_is_never_not_an_error() -> None:
    """9999-12-31 23:59 in New York is in year 10000 in UTC: no instant, so "never"."""
    now = datetime(9999, 12, 30, tzinfo=NEW_YORK)
    assert Process("p", cron="59 23 31 12 *").next_occurrence(now, NEW_YORK) is None
    assert Process("p", cron="0 12 * * *").next_occurrence(now, NEW_YORK) == now.replace(hour=12)
