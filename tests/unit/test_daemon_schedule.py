"""The daemon's scheduler (issue #14, part 7), on its real APScheduler loop with no
database (no job runs a task): a missed trigger is a WARNING naming the process, a reload
keeps each process's phase, and a backward clock step costs at most one tick.

The clock step is injected: the test cannot step the machine's clock, so APScheduler's
`datetime` and the daemon's `ClockWatch` read a wall clock the test moves back 600 s."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import apscheduler.executors.base
import apscheduler.schedulers.base
import pytest
from apscheduler.triggers.interval import IntervalTrigger

from bgtaskex import daemon as daemon_module
from bgtaskex.clockstep import ClockWatch
from bgtaskex.config import Settings, load_settings
from bgtaskex.daemon import Daemon
from bgtaskex.processes import Process
from bgtaskex.walltime import local_now, local_zone

pytestmark = pytest.mark.timeout(30)


class _NoClient:
    def close(self) -> None:
        pass


def settings(tmp_path: Path, body: str) -> Settings:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(body, encoding="utf-8")
    return load_settings(path, environ={})


def daemon_of(tmp_path: Path, body: str) -> Daemon:
    loaded = settings(tmp_path, body)
    return Daemon(lambda: (loaded, _NoClient()))  # type: ignore[arg-type,return-value]


@pytest.fixture
def running() -> Iterator[Callable[[Daemon], None]]:
    """Start a daemon's scheduler loop on a thread; shut it down after the test."""
    started: list[tuple[Daemon, threading.Thread]] = []

    def start(daemon: Daemon) -> None:
        thread = threading.Thread(target=daemon.scheduler.start, daemon=True)
        thread.start()
        started.append((daemon, thread))

    yield start
    for daemon, thread in started:
        daemon.stop.set()
        daemon.scheduler.shutdown(wait=False)
        thread.join(5)


def next_run(job: Any) -> Any:
    return getattr(job, "next_run_time", None)  # a cron job's is set once the loop starts


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_a_missed_trigger_is_a_warning_naming_the_process(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, running: Callable[[Daemon], None]
) -> None:
    caplog.set_level(logging.WARNING, logger="bgtaskex")
    daemon = daemon_of(tmp_path, '[[processes]]\nname = "nightly"\ncron = "0 3 * * *"\n')
    daemon.schedule()
    late = local_now() - timedelta(seconds=120)  # beyond the 30 s misfire grace
    daemon.scheduler.modify_job("nightly", next_run_time=late)
    running(daemon)

    def warned() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    assert wait_for(lambda: any("process nightly" in m and "missed" in m for m in warned()), 10)
    assert daemon.runs == 0


def test_a_reload_keeps_each_process_phase(tmp_path: Path) -> None:
    body = (
        '[[processes]]\nname = "daily"\nevery = "24h"\n'
        '[[processes]]\nname = "often"\nevery = "1m"\n'
        '[[processes]]\nname = "nightly"\ncron = "0 3 * * *"\n'
    )
    daemon = daemon_of(tmp_path, body)
    daemon.schedule()
    phase = {job.id: (next_run(job), job.trigger) for job in daemon.scheduler.get_jobs()}
    time.sleep(0.01)
    # the reload changes the daily process's window and the other's interval
    changed = body.replace('every = "24h"\n', 'every = "24h"\nwindow = {days = "mon-fri"}\n')
    changed = changed.replace('every = "1m"', 'every = "2m"')
    daemon.settings = settings(tmp_path, changed)
    daemon.schedule()
    jobs = {job.id: job for job in daemon.scheduler.get_jobs()}
    assert set(jobs) == {"daily", "often", "nightly"}
    daily = jobs["daily"]
    assert (next_run(daily), daily.trigger) == phase["daily"]  # not run at once
    assert daily.args[0].window is not None  # with the new settings
    assert jobs["nightly"].trigger is phase["nightly"][1]
    assert jobs["often"].trigger is not phase["often"][1]  # a new interval starts anew
    assert next_run(jobs["often"]) > phase["often"][0]
    daemon.settings = settings(tmp_path, '[[processes]]\nname = "often"\nevery = "2m"\n')
    daemon.schedule()
    assert [job.id for job in daemon.scheduler.get_jobs()] == ["often"]


def test_clock_watch_reports_backward_steps_only() -> None:
    wall, mono = [1000.0], [50.0]
    steps: list[float] = []
    watch = ClockWatch(steps.append, wall=lambda: wall[0], monotonic=lambda: mono[0])
    wall[0] += 1.0
    mono[0] += 1.0
    assert watch.check() == 0.0
    wall[0] += 3600.0  # a forward step: APScheduler copes
    mono[0] += 1.0
    assert watch.check() == 0.0
    wall[0] += 0.7  # a slew of 0.3 s: not a step
    mono[0] += 1.0
    assert watch.check() == 0.0
    wall[0] -= 599.0  # one second passes while the clock goes back 600 s
    mono[0] += 1.0
    assert watch.check() == pytest.approx(600.0)
    assert steps == [pytest.approx(600.0)]


def test_a_backward_clock_step_costs_at_most_one_tick(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running: Callable[[Daemon], None]
) -> None:
    back = [0.0]

    class SteppedClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
            return datetime.now(tz) - timedelta(seconds=back[0])

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", SteppedClock)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", SteppedClock)
    daemon = daemon_of(tmp_path, 'log_level = "WARNING"\n')
    ticks: list[float] = []
    daemon.scheduler.add_job(lambda: ticks.append(time.monotonic()), IntervalTrigger(seconds=1))
    ClockWatch(daemon.clock_stepped_back, wall=lambda: time.time() - back[0]).start(
        daemon.stop, period=0.1
    )
    running(daemon)
    assert wait_for(lambda: len(ticks) >= 2, 5)
    back[0] = 600.0  # `date -s` 600 s back
    stepped = time.monotonic()
    assert wait_for(lambda: ticks[-1] > stepped + 0.5, 5), "stalled after the step"
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert max(gaps) < 2.5, gaps  # at most one tick missed


def stepped_clock(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[int, list[float], Callable[[], float]]:
    """A wall clock for APScheduler and the daemon that reads a second before a whole
    minute F (in UTC, so in any zone's) and steps back by what the test adds to `back[0]`:
    (F, back, the clock as epoch seconds)."""
    real = time.time()
    minute = (int(real) // 60 + 2) * 60
    back = [real + 1.0 - minute]

    def wall() -> float:
        return time.time() - back[0]

    class SteppedClock(datetime):
        @classmethod
        def now(cls, tz: Any = None) -> Any:  # type: ignore[override]
            return datetime.now(tz) - timedelta(seconds=back[0])

    monkeypatch.setattr(apscheduler.schedulers.base, "datetime", SteppedClock)
    monkeypatch.setattr(apscheduler.executors.base, "datetime", SteppedClock)
    monkeypatch.setattr(daemon_module, "local_now", lambda: SteppedClock.now(local_zone()))
    return minute, back, wall


def test_a_backward_clock_step_never_runs_a_fixed_time_cron_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, running: Callable[[Daemon], None]
) -> None:
    """Attack 10 of #14: a step back just before a daily cron's time moved its next run
    back by the step; it ran then, and again when the clock showed its time. The test's
    wall clock starts a second before a whole minute F, the cron's time; it steps back
    1.5 s just before F, and again just after the run."""
    minute, back, wall = stepped_clock(monkeypatch)
    daemon = daemon_of(tmp_path, 'log_level = "WARNING"\n')
    at = datetime.fromtimestamp(minute, local_zone())
    nightly = Process("nightly", cron=f"{at.minute} {at.hour} * * *")
    ticks: list[float] = []
    daemon.scheduler.add_job(lambda: ticks.append(wall()), nightly.trigger(), id="nightly")
    ClockWatch(daemon.clock_stepped_back, wall=wall).start(daemon.stop, period=0.1)
    running(daemon)
    assert wait_for(lambda: wall() > minute - 0.5, 3)
    back[0] += 1.5  # `date -s` 1.5 s back, half a second before F
    assert wait_for(lambda: bool(ticks), 5), "the cron did not run"
    assert ticks[0] >= minute  # at its wall-clock time, not 1.5 s before
    back[0] += 1.5  # and back again, just after it ran
    assert not wait_for(lambda: len(ticks) > 1, 2.5), ticks  # F is not run again


def test_a_backward_clock_step_past_the_last_fire_does_not_run_it_again(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    running: Callable[[Daemon], None],
) -> None:
    """Attack 2 #07 of #14: a cron with two times a minute apart, F and F + 60 s, runs at
    F; the clock then steps back 61 s, more than the 59.5 s left to F + 60: the next run
    moved back by the step (F - 1 s) found F again, which ran twice. Its next time is
    F + 60 s, the first after the one it ran (0 9,11 * * *, 2h30 back at 09:10: 11:00)."""
    minute, back, wall = stepped_clock(monkeypatch)
    caplog.set_level(logging.WARNING, logger="bgtaskex")
    daemon = daemon_of(tmp_path, 'log_level = "WARNING"\n')
    at = datetime.fromtimestamp(minute, local_zone())
    then = at + timedelta(minutes=1)  # maybe in the next hour: both hours, both minutes
    minutes = ",".join(str(m) for m in sorted({at.minute, then.minute}))
    hours = ",".join(str(h) for h in sorted({at.hour, then.hour}))
    twice = Process("twice", cron=f"{minutes} {hours} * * *")
    ticks: list[float] = []
    daemon.scheduler.add_job(lambda: ticks.append(wall()), twice.trigger(), id="twice")
    ClockWatch(daemon.clock_stepped_back, wall=wall).start(daemon.stop, period=0.1)
    running(daemon)
    assert wait_for(lambda: bool(ticks), 5), "the cron did not run"
    assert ticks[0] >= minute
    assert wait_for(lambda: wall() > minute + 0.5, 2)
    back[0] += 61.0  # `date -s` 61 s back: the clock reads F - 60.5 s
    assert wait_for(lambda: any("stepped back" in r.getMessage() for r in caplog.records), 3)
    assert next_run(daemon.scheduler.get_job("twice")).timestamp() == minute + 60
    assert not wait_for(lambda: len(ticks) > 1, 2.5), ticks  # F is not run again
