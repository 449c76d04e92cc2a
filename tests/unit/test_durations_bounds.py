"""Durations are finite and at most 100 years (`config.MAX_DURATION`); a snooze too
(attack round on #14, findings 01, 02, 03, 05)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bgtaskex import Action
from bgtaskex.config import MAX_DURATION, load_settings, parse_duration, parse_when
from bgtaskex.exceptions import ConfigError
from bgtaskex.run.failures import not_before


def test_the_bound_is_100_years() -> None:
    assert MAX_DURATION == 36500 * 86400
    assert parse_duration("36500d") == MAX_DURATION
    assert parse_duration(MAX_DURATION) == MAX_DURATION


@pytest.mark.parametrize(
    "value",
    [math.nan, math.inf, -math.inf, "36501d", "5215w", MAX_DURATION + 1, 10**400, "99999999999d"],
)
def test_parse_duration_refuses_non_finite_and_over_100_years(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    "key",
    ["kill_after", "retry_delay", "max_retry_delay", "max_execution_time", "keep_finished"],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_toml_float_nan_or_inf_is_a_bad_value(tmp_path: Path, key: str, value: str) -> None:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(f"{key} = {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{key} \\(from config file"):
        load_settings(path, environ={})


def test_parse_when_refuses_what_leaves_the_datetime_range() -> None:
    for text in ("9999-12-31T23:59-05:00", "0001-01-01T00:00+05:00", "36501d"):
        with pytest.raises(ValueError):
            parse_when(text)
    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert parse_when("36500d", now=now) == now - timedelta(days=36500)


def test_not_before_of_a_delay_is_at_most_100_years_ahead() -> None:
    for delay in (1e12, math.inf, 2.0**62 * 30):
        when = not_before(delay)
        assert when is not None
        ahead = (when - datetime.now(UTC)).total_seconds()
        assert MAX_DURATION - 5 < ahead <= MAX_DURATION
    assert not_before(math.nan) is None and not_before(0) is None


@pytest.mark.parametrize("seconds", [math.inf, math.nan, 1e12, MAX_DURATION + 1, -1])
def test_snooze_refuses_what_is_not_0_to_100_years(seconds: float) -> None:
    with pytest.raises(ValueError, match="snooze takes seconds from 0 to 100 years"):
        Action().snooze(seconds)


def test_snooze_takes_up_to_100_years() -> None:
    action = Action()
    assert action.snooze(MAX_DURATION) is False
    assert action._snooze_until is not None


def test_parse_when_takes_z_in_either_case() -> None:
    """ISO 8601 and RFC 3339 allow a lowercase 'z' (attack round 2)."""
    utc = datetime(2026, 12, 24, 6, 0, tzinfo=UTC)
    assert parse_when("2026-12-24T06:00z") == parse_when("2026-12-24T06:00Z") == utc
