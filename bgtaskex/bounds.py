"""The rules of numeric settings and options: one rule per setting, one function that
enforces it, one message for every bad value, wherever the value came from (the config
file, a `BGTASKEX_*` variable, a command-line option).

A rule says the whole of what it accepts: `--max-execution-time 0` and
`max_execution_time = -5` both get "expected a duration > 0, like 30s, 5m, 2h or 7d,
at most 36500d (100 years)", not one message for the sign and another for zero.
"""

from __future__ import annotations

import math
import re

DURATION_PATTERN = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>ms|s|m|h|d|w)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
#: The longest duration that any setting, option or delay takes: 100 years (36500d).
#: A moment that far from now is still a datetime (years 1..9999), whatever is added.
MAX_DURATION = 36500 * 86400.0


def parse_duration(value: object) -> float:
    """Seconds from a number or a string like `30`, `30s`, `5m`, `2h`, `7d`: finite,
    >= 0 and at most `MAX_DURATION` (100 years)."""
    return DURATION.seconds(value)


def _seconds(value: object) -> float | None:
    """The seconds a value says, or None when it is no duration (a bool, a word, NaN)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        try:
            seconds = float(value)
        except OverflowError:  # an int too large for a float
            return math.inf
        return None if math.isnan(seconds) else seconds
    match = DURATION_PATTERN.match(str(value))
    if match is None:
        return None
    return float(match["n"]) * _UNITS[match["unit"] or "s"]


def _text(seconds: float) -> str:
    """`1s`, `50ms`, `1d`: a bound as a config would say it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds * 1000:g}ms"


class DurationRule:
    """A duration from `low` (excluded when `above`) to `high`; with `never`, also the
    words that mean "no limit" (returned as None).

    The rules are plain classes, not dataclasses: the idle `run-once` reads them, and
    importing `dataclasses` (with `inspect`) costs it about 12 ms (bench/startup.py)."""

    __slots__ = ("above", "high", "low", "never")

    def __init__(
        self,
        low: float = 0.0,
        above: bool = False,
        high: float = MAX_DURATION,
        never: tuple[str, ...] = (),
    ) -> None:
        self.low, self.above, self.high, self.never = low, above, high, never

    @property
    def text(self) -> str:
        """What the rule accepts, as every message says it."""
        if self.high < MAX_DURATION:
            said = f"a duration from {_text(self.low)} to {_text(self.high)}"
        else:
            sign = ">" if self.above else ">="
            low = "0" if self.low == 0 else _text(self.low)
            said = f"a duration {sign} {low}, like 30s, 5m, 2h or 7d, at most 36500d (100 years)"
        return said + (f", or {self.never[0]}" if self.never else "")

    def __call__(self, value: object) -> float | None:
        if self.never and isinstance(value, str) and value.strip().lower() in self.never:
            return None
        seconds = _seconds(value)
        if seconds is None or not self.low <= seconds <= self.high:
            raise ValueError(f"expected {self.text}, got {value!r}")
        if self.above and seconds == self.low:
            raise ValueError(f"expected {self.text}, got {value!r}")
        return seconds

    def seconds(self, value: object) -> float:
        """The rule for a setting that has no `never`: always seconds."""
        seconds = self(value)
        assert seconds is not None, "a rule with never: call it"
        return seconds


class CountRule:
    """A whole number from `low` to `high` (None: no upper bound)."""

    __slots__ = ("high", "low")

    def __init__(self, low: int = 1, high: int | None = None) -> None:
        self.low, self.high = low, high

    @property
    def text(self) -> str:
        if self.high is None:
            return f"a whole number >= {self.low}"
        return f"a whole number from {self.low} to {self.high}"

    def __call__(self, value: object) -> int:
        number: int | None = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
            number = int(value)
        if number is None or number < self.low or (self.high is not None and number > self.high):
            raise ValueError(f"expected {self.text}, got {value!r}")
        return number


#: Every duration: >= 0 (retry_delay, --in, --older-than, --wait, a rule's older_than).
DURATION = DurationRule()
#: A duration that must pass: max_execution_time, stuck_after, stop_timeout, a process's
#: every and max_execution_time.
POSITIVE_DURATION = DurationRule(above=True)
#: kill_after: >= 0, or never.
DURATION_OR_NEVER = DurationRule(never=("never",))
#: stale_after: > 0, or never.
POSITIVE_DURATION_OR_NEVER = DurationRule(above=True, never=("never",))
#: keep_finished, keep_failed: >= 0, or never (forever).
KEEP_FOR = DurationRule(never=("never", "forever"))
#: [concurrency] lease and poll.
LEASE = DurationRule(low=1.0, high=86400.0)
POLL = DurationRule(low=0.05, high=3600.0)
#: max_attempts.
AT_LEAST_ONE = CountRule(1)
