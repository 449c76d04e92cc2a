"""The retry backoff's delay (docs/semantics.md#retry-backoff): doubled at each death up
to max_retry_delay, with +-10% jitter that holds at the cap too (attack #14 finding 16)."""

from __future__ import annotations

import pytest

from bgtaskex import Action
from bgtaskex.config import Settings
from bgtaskex.run.failures import retry_delay

SETTINGS = Settings(retry_delay=30.0, max_retry_delay=3600.0)


class Dies(Action):
    def execute(self, deadline: float) -> bool:
        return True


class OwnDelay(Dies):
    retry_delay = 10.0
    max_retry_delay = 100.0


def samples(action: type[Action], death: int, n: int = 1000) -> list[float]:
    return [retry_delay(action, SETTINGS, death) for _ in range(n)]


@pytest.mark.parametrize("death", [1, 3, 5])
def test_below_the_cap_the_delay_is_doubled_with_jitter_both_ways(death: int) -> None:
    delay = 30.0 * 2 ** (death - 1)
    values = samples(Dies, death)
    assert 0.9 * delay <= min(values) < 0.92 * delay
    assert 1.08 * delay < max(values) <= 1.1 * delay


@pytest.mark.parametrize("death", [8, 9, 10, 20, 63, 1000])
def test_at_the_cap_the_jitter_stays_and_the_cap_is_a_maximum(death: int) -> None:
    """Tasks that died together at the cap must not retry in lockstep: the delays keep
    spreading over the cap's lowest 10%, never above it."""
    values = samples(Dies, death)
    assert all(0.9 * 3600.0 <= value <= 3600.0 for value in values), (min(values), max(values))
    assert len({round(value, 3) for value in values}) > 900  # not one value
    assert min(values) < 0.92 * 3600.0 and max(values) > 0.98 * 3600.0


def test_the_class_attributes_set_base_and_cap() -> None:
    assert all(9.0 <= value <= 11.0 for value in samples(OwnDelay, 1))
    values = samples(OwnDelay, 30)
    assert all(90.0 <= value <= 100.0 for value in values)
    assert len(set(values)) > 900


def test_zero_means_the_next_run() -> None:
    class Now(Dies):
        retry_delay = 0.0

    class CapZero(Dies):
        max_retry_delay = 0.0

    assert samples(Now, 5, 10) == [0.0] * 10
    assert samples(CapZero, 5, 10) == [0.0] * 10
