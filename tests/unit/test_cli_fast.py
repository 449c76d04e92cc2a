"""`run-once` without click (cli/fast.py) reads a command line exactly as click does,
or leaves it to click: the same state, process, wait and flags reach the command."""

from __future__ import annotations

from typing import Any

import pytest

from bgtaskex.cli import fast
from bgtaskex.cli import run as run_module
from bgtaskex.cli.main import _main

TAKEN = [
    ["run-once"],
    ["--config", "c.toml", "run-once", "--json", "-q"],
    ["--database-url=sqlite:///x.db", "run-once", "--max-execution-time", "30", "--wait=5s"],
    ["run-once", "--process", "nightly", "--no-progress", "--kill-after", "never"],
    ["--config=c.toml", "--database-url", "sqlite:///y.db", "run-once", "--lock-file", "/l"],
    ["run-once", "--progress", "--quiet", "--wait", "90"],
]
LEFT_TO_CLICK = [
    ["run-once", "--help"],
    ["run-once", "--wait", "-1"],
    ["run-once", "--wait", "soon"],
    ["run-once", "--process"],
    ["run-once", "--max-execution-time", ""],
    ["run-once", "--unknown"],
    ["-q", "run-once"],
    ["list"],
    ["run-once", "extra"],
    [],
]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What each path hands to the command, instead of running it."""
    for name in ("BGTASKEX_CONFIG", "BGTASKEX_DATABASE_URL", "BGTASKEX_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    seen: list[dict[str, Any]] = []

    def record(state: Any, process: Any, wait: float, **flags: Any) -> None:
        flags.pop("echo")
        seen.append(
            {
                "config": state.config_file,
                "overrides": dict(state.overrides),
                "process": process,
                "wait": wait,
                **flags,
            }
        )

    monkeypatch.setattr("bgtaskex.cli.once.run_once_command", record)
    monkeypatch.setattr(run_module, "run_once_command", record)
    return seen


@pytest.mark.parametrize("argv", TAKEN, ids=" ".join)
def test_a_line_taken_without_click_reaches_the_command_as_through_click(
    argv: list[str], calls: list[dict[str, Any]]
) -> None:
    assert fast.run_once(argv) == 0
    assert _main(argv) == 0
    assert len(calls) == 2 and calls[0] == calls[1]


@pytest.mark.parametrize("argv", LEFT_TO_CLICK, ids=lambda a: " ".join(a) or "(none)")
def test_any_other_line_is_left_to_click_untouched(
    argv: list[str], calls: list[dict[str, Any]]
) -> None:
    assert fast.run_once(argv) is None
    assert calls == []
