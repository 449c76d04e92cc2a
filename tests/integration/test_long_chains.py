"""The runner's own limits: a chain of any length runs as a loop, a hook that overruns
the deadline is reported, and params that outgrow `max_params_bytes` are a hook error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bgtaskex import Client

CHAIN = 2_000  # the recursive runner died at about 480


def test_a_long_chain_runs_each_action_once_in_one_run(client: Client, tmp_path: Path) -> None:
    log = tmp_path / "tally"
    actions = [("tests.scripted:Tally", {"n": n, "log": str(log)}) for n in range(CHAIN)]
    tid = client.enqueue("chain", actions)
    summary = client.run_once(max_execution_time=120)
    assert (summary.finished, summary.errors, summary.actions) == (1, 0, CHAIN)
    assert log.read_text().split() == [str(n) for n in range(CHAIN)]
    assert client.get(tid).status == "finished"


def test_an_overrun_is_logged_and_reported(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    client.enqueue("slow", [("tests.scripted:Overrun", {"seconds": 2.0})])
    with caplog.at_level(logging.WARNING, logger="bgtaskex"):
        summary = client.run_once(max_execution_time=1)
    assert 0.6 < summary.max_overrun < 30
    assert "overran the deadline by" in summary.line()
    (line,) = [r.getMessage() for r in caplog.records if "overran" in r.getMessage()]
    assert "tests.scripted:Overrun" in line and "execute" in line


def test_no_overrun_is_reported_for_a_run_within_its_budget(client: Client) -> None:
    client.enqueue("quick", [("tests.scripted:Overrun", {"seconds": 0.0})])
    summary = client.run_once()
    assert summary.max_overrun == 0.0
    assert "overran" not in summary.line()


def test_params_grown_past_the_limit_are_a_hook_error(client: Client) -> None:
    limited = Client(
        client.store, client.registry, client.settings._replace(max_params_bytes=10_000)
    )
    tid = limited.enqueue("big", [("tests.scripted:Grows", {"bytes": 20_000})])
    summary = limited.run_once()
    assert summary.errors == 1
    task = limited.get(tid)
    assert task.status == "running"  # left for the next run to recover, as any hook error
    assert "blob" not in task.actions[0].params
    (event,) = [e for e in limited.events(tid) if e.error]
    assert "max_params_bytes" in event.message and "10,000" in event.message


def test_sys_exit_in_a_hook_is_a_hook_error_not_the_end_of_the_run(client: Client) -> None:
    bad = client.enqueue("exits", [("tests.scripted:Exits", {})])
    good = client.enqueue("after", [("tests.scripted:Noop", {})])
    summary = client.run_once()
    assert (summary.errors, summary.finished) == (1, 1)
    assert client.get(good).status == "finished"
    assert client.get(bad).status == "running"  # recovered by the next run, as any error
    (event,) = [e for e in client.events(bad) if e.error]
    assert "SystemExit" in event.message
