"""Cron means crontab (issue #14, part 6): the day-of-month / day-of-week rule against a
brute-force reference of crontab written here, impossible dates refused at load, and rare
schedules (Feb 29, `every = "400d"`) given their real next time."""

from __future__ import annotations

import json
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from bgtaskex.config import load_settings
from bgtaskex.exceptions import ConfigError
from bgtaskex.processes import Process, cron_fields
from bgtaskex.schedule import WeeklyWindow
from tests.support.cli import run_cli

# -- a brute-force crontab -------------------------------------------------------------

_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES = {
    3: ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
    4: ["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
}


def _value(token: str, index: int) -> int:
    if token.isdigit():
        return int(token)
    return _NAMES[index].index(token) + (1 if index == 3 else 0)


def _field(text: str, index: int) -> set[int]:
    """crontab(5): lists of `*`, `a`, `a-b`, each with an optional `/step`."""
    low, high = _RANGES[index]
    values: set[int] = set()
    for item in text.split(","):
        span, _, step = item.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (_value(v, index) for v in span.split("-"))
        else:
            first = last = _value(span, index)
        values.update(range(first, last + 1, int(step or 1)))
    if index == 4 and 7 in values:
        values = (values - {7}) | {0}
    return values


def crontab_times(expression: str, after: datetime, count: int) -> list[datetime]:
    """The first `count` times after `after` (naive) by crontab's rule, walking day by day
    (then minute by minute within a matching day), bounded to 30 years."""
    texts = expression.split()
    minutes, hours, days, months, weekdays = (_field(t, i) for i, t in enumerate(texts))
    either = not texts[2].startswith("*") and not texts[4].startswith("*")
    found: list[datetime] = []
    day = after.date()
    for _ in range(366 * 30):
        in_month = day.day in days
        in_week = day.isoweekday() % 7 in weekdays
        if day.month in months and ((in_month or in_week) if either else (in_month and in_week)):
            for minute_of_day in range(24 * 60):
                hour, minute = divmod(minute_of_day, 60)
                moment = datetime(day.year, day.month, day.day, hour, minute)
                if hour in hours and minute in minutes and moment > after:
                    found.append(moment)
                    if len(found) == count:
                        return found
        day += timedelta(days=1)
    return found


def random_field(rng: random.Random, index: int) -> str:
    low, high = _RANGES[index]
    high = min(high, 6) if index == 4 else high  # "a/n" and ranges within Sun-Sat
    items = []
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        kind = rng.choice(["*", "*/n", "a", "a", "a-b", "a-b/n", "name"])
        a, b = sorted(rng.sample(range(low, high + 1), 2))
        n = rng.randint(1, max(1, (b - a)))
        if kind == "*":
            return "*"
        if kind == "*/n":
            return f"*/{rng.randint(1, high - low)}"
        if kind == "name" and index in _NAMES:
            names = _NAMES[index]
            first = rng.randrange(len(names) - 1)
            items.append(
                names[first] + ("-" + names[rng.randrange(first, len(names))] if n % 2 else "")
            )
        elif kind == "a-b":
            items.append(f"{a}-{b}")
        elif kind == "a-b/n":
            items.append(f"{a}-{b}/{n}")
        else:
            items.append(str(rng.choice([a, b, 7] if index == 4 else [a, b])))
    return ",".join(items)


def random_expression(rng: random.Random) -> str:
    return " ".join(random_field(rng, index) for index in range(5))


@pytest.mark.timeout(60)
def test_next_ten_fire_times_of_random_expressions_match_crontab() -> None:
    rng = random.Random(14)
    zone = UTC  # a fixed zone: DST is tested elsewhere
    tested = both_restricted = 0
    while tested < 1200:
        expression = random_expression(rng)
        try:
            cron_fields(expression)
        except ValueError:
            continue  # refused at load (a step too big, an impossible date): not a schedule
        start = datetime(2026, 1, 1) + timedelta(minutes=rng.randrange(5 * 366 * 24 * 60))
        expected = crontab_times(expression, start, 10)
        assert expected, expression  # (a rare one may have fewer than 10 in 30 years)
        trigger = Process("p", cron=expression).trigger(zone)
        got: list[datetime] = []
        fire = None
        now = start.replace(tzinfo=zone) + timedelta(seconds=1)
        while len(got) < len(expected):
            fire = trigger.get_next_fire_time(fire, now)
            assert fire is not None, expression
            got.append(fire.replace(tzinfo=None))
        assert got == expected, (expression, start)
        tested += 1
        fields = expression.split()
        both_restricted += not fields[2].startswith("*") and not fields[4].startswith("*")
    assert both_restricted > 100  # the rule under test is exercised


def test_either_day_rule_examples() -> None:
    sunday = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
    # the 1st, the 15th and every Monday: tomorrow is a Monday
    first = Process("p", cron="0 0 1,15 * 1").next_occurrence(sunday, UTC)
    assert first == datetime(2026, 12, 7, tzinfo=UTC)
    # "*/2" in day of month counts as "*" (crontab): both must match, odd Mondays
    odd_mondays = Process("p", cron="0 0 */2 * mon").next_occurrence(sunday, UTC)
    assert odd_mondays == datetime(2026, 12, 7, tzinfo=UTC)
    assert Process("p", cron="0 0 */2 * tue").next_occurrence(sunday, UTC) == datetime(
        2026, 12, 15, tzinfo=UTC
    )


# -- impossible and rare dates ----------------------------------------------------------


def load(tmp_path: Path, cron: str) -> object:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(f'[[processes]]\nname = "p"\ncron = "{cron}"\n', encoding="utf-8")
    return load_settings(path, environ={})


@pytest.mark.parametrize(
    "cron", ["0 0 31 2 *", "0 0 30 2 *", "0 0 30,31 feb *", "0 0 31 4,6,9,11 *"]
)
def test_impossible_dates_are_refused_at_load(tmp_path: Path, cron: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, cron)
    message = str(caught.value)
    assert "\n" not in message and "process 'p'" in message and "never fires" in message


@pytest.mark.parametrize("cron", ["0 0 29 2 *", "0 0 31 2 1", "0 0 31 */2 *", "0 0 30,31 1-2 *"])
def test_possible_dates_are_accepted(tmp_path: Path, cron: str) -> None:
    load(tmp_path, cron)


def test_impossible_date_is_one_line_exit_2(tmp_path: Path, isolated: None) -> None:
    path = tmp_path / "bgtaskex.toml"
    path.write_text('[[processes]]\nname = "p"\ncron = "0 0 31 2 *"\n', encoding="utf-8")
    result = run_cli("--config", path, "processes")
    assert result.code == 2 and result.out == ""
    assert result.err.count("\n") == 1 and "never fires" in result.err


def test_feb_29_and_long_intervals_have_their_real_next_time() -> None:
    now = datetime(2026, 12, 6, 7, 0, tzinfo=UTC)
    leap = Process("p", cron="0 0 29 2 *")
    assert leap.next_occurrence(now, UTC) == datetime(2028, 2, 29, tzinfo=UTC)
    # 2100 is not a leap year: eight years from 2096 to 2104
    later = datetime(2096, 3, 1, tzinfo=UTC)
    assert leap.next_occurrence(later, UTC) == datetime(2104, 2, 29, tzinfo=UTC)
    mondays = Process("p", cron="0 0 * * *", window=WeeklyWindow(["mon"], "00:00", "01:00"))
    assert mondays.next_occurrence(now, UTC) == datetime(2026, 12, 7, tzinfo=UTC)
    rare = Process("p", every=400 * 86400)
    at = rare.next_occurrence(datetime.now(UTC), UTC)
    assert at is not None and at - datetime.now(UTC) > timedelta(days=399)


def test_processes_shows_feb_29(tmp_path: Path, isolated: None) -> None:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(
        '[[processes]]\nname = "leap"\ncron = "0 0 29 2 *"\n'
        '[[processes]]\nname = "rare"\nevery = "400d"\n',
        encoding="utf-8",
    )
    result = run_cli("--config", path, "processes", "--json")
    assert result.code == 0, result.err
    leap, rare = json.loads(result.out)
    at = datetime.fromisoformat(leap["next_at"])
    assert (at.month, at.day, at.hour, at.minute) == (2, 29, 0, 0)
    assert date.today() < at.date() <= date.today() + timedelta(days=4 * 366)
    assert rare["next_at"] is not None
