"""One rule per numeric setting, one message for every bad value, from every source:
the config file, its `BGTASKEX_*` variable and its command-line option (#15: the config's
`max_execution_time = -5` said ">= 0" while `--max-execution-time 0` said "> 0").

Each case runs the real command line in this process (`run_cli`), reading the value
from each source in turn, and checks the one error line it prints."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgtaskex.bounds import (
    AT_LEAST_ONE,
    DURATION,
    DURATION_OR_NEVER,
    KEEP_FOR,
    LEASE,
    POLL,
    POSITIVE_DURATION,
    POSITIVE_DURATION_OR_NEVER,
    DurationRule,
)
from bgtaskex.concurrency import WORKERS
from tests.support.cli import run_cli

#: setting: (its rule's text, (command, option) that takes it, or None)
SETTINGS: dict[str, tuple[str, tuple[str, str] | None]] = {
    "max_execution_time": (POSITIVE_DURATION.text, ("run-once", "--max-execution-time")),
    "stuck_after": (POSITIVE_DURATION.text, ("check", "--stuck-after")),
    "stale_after": (POSITIVE_DURATION_OR_NEVER.text, ("check", "--stale-after")),
    "stop_timeout": (POSITIVE_DURATION.text, None),
    "kill_after": (DURATION_OR_NEVER.text, ("run-once", "--kill-after")),
    "keep_finished": (KEEP_FOR.text, None),
    "keep_failed": (KEEP_FOR.text, None),
    "retry_delay": (DURATION.text, None),
    "max_retry_delay": (DURATION.text, None),
    "max_attempts": (AT_LEAST_ONE.text, None),
    "max_params_bytes": ("a size in bytes >= 1 (or 512KiB, 1MiB)", None),
}

#: Bad values, as TOML literals: every one breaks the rule of every setting above.
BAD = ["-5", '"-5"', '"soon"', '"36501d"', "true", '""', "1e400"]
#: ... and those that break only the rules that want more than 0.
BAD_FOR_POSITIVE = ["0", '"0s"']


def _cases() -> list[tuple[str, str]]:
    found = []
    for key, (text, _option) in SETTINGS.items():
        positive = text in (POSITIVE_DURATION.text, POSITIVE_DURATION_OR_NEVER.text)
        values = BAD + (BAD_FOR_POSITIVE if positive else [])
        if key in ("max_attempts",):
            values = [v for v in BAD if v != '"36501d"'] + ["0", '"two"', "1.5"]
        if key == "max_params_bytes":
            values = ["-5", '"-5"', '"soon"', "true", '""', "0", "1.5"]
        found += [(key, value) for value in values]
    return found


def _python(toml_literal: str) -> object:
    import tomllib

    return tomllib.loads(f"v = {toml_literal}")["v"]


def _error(result: object) -> str:
    code, err = result.code, result.err  # type: ignore[attr-defined]
    assert code == 2, result
    assert "Traceback" not in err, result
    (line,) = err.strip().splitlines()
    return str(line)


@pytest.mark.parametrize(("key", "literal"), _cases())
def test_a_bad_value_gets_the_rule_of_its_setting_from_every_source(
    key: str, literal: str, tmp_path: Path, isolated: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    text, option = SETTINGS[key]
    value = _python(literal)
    url = ("--database-url", f"sqlite:///{tmp_path / 'bounds.db'}")
    command, flag = option or ("processes", "")
    said = []

    config = tmp_path / "bgtaskex.toml"
    config.write_text(f"{key} = {literal}\n", encoding="utf-8")
    line = _error(run_cli(*url, "--config", config, command))
    origin = f"config file {config}"
    assert line == f"bgtaskex: error: {key} (from {origin}): expected {text}, got {value!r}"
    said.append(line.split(": expected ", 1)[1].rsplit(", got ", 1)[0])

    as_text = value if isinstance(value, str) else str(value).lower()
    variable = f"BGTASKEX_{key.upper()}"
    with monkeypatch.context() as patch:
        patch.setenv(variable, as_text)
        line = _error(run_cli(*url, command))
    assert line == f"bgtaskex: error: {key} (from {variable}): expected {text}, got {as_text!r}"
    said.append(line.split(": expected ", 1)[1].rsplit(", got ", 1)[0])

    if option is not None:
        line = _error(run_cli(*url, command, f"{flag}={as_text}"))
        origin = f"option {flag}"
        assert line == f"bgtaskex: error: {key} (from {origin}): expected {text}, got {as_text!r}"
        said.append(line.split(": expected ", 1)[1].rsplit(", got ", 1)[0])
    assert set(said) == {text}, said


@pytest.mark.parametrize("key", ["max_execution_time", "kill_after", "stuck_after"])
@pytest.mark.parametrize("value", ["1", "45s", "2m"])
def test_a_good_value_passes_from_every_source(key: str, value: str) -> None:
    from bgtaskex.config import load_settings

    from_file_or_option = load_settings(overrides={key: value}, environ={})
    from_env = load_settings(environ={f"BGTASKEX_{key.upper()}": value})
    assert getattr(from_file_or_option, key) == getattr(from_env, key) > 0


#: Options that are no setting but take a duration: the rule of every duration.
DURATION_OPTIONS = [
    ("enqueue", "x", "tests.scripted:Noop", "--in"),
    ("purge", "--older-than"),
    ("run-once", "--wait"),
]


@pytest.mark.parametrize("args", DURATION_OPTIONS, ids=lambda a: a[-1])
@pytest.mark.parametrize("value", ["-5", "soon", "36501d"])
def test_duration_options_say_the_rule_of_every_duration(
    args: tuple[str, ...], value: str, tmp_path: Path, isolated: None
) -> None:
    url = ("--database-url", f"sqlite:///{tmp_path / 'bounds.db'}")
    line = _error(run_cli(*url, "--import", "tests.scripted", *args, value))
    assert f"'{args[-1]}': expected {DURATION.text}, got {value!r}" in line, line


@pytest.mark.parametrize("value", ["-1h", "0", "0s", "soon", "36501d"])
def test_check_failed_within_says_the_rule_of_a_duration_that_must_pass(
    value: str, tmp_path: Path, isolated: None
) -> None:
    """#15 attack: it said ">= 0" for -1h and "> 0" for 0, in a form of its own."""
    url = ("--database-url", f"sqlite:///{tmp_path / 'bounds.db'}")
    line = _error(run_cli(*url, "check", "--failed-within", value))
    assert f"'--failed-within': expected {POSITIVE_DURATION.text}, got {value!r}" in line, line


#: Settings inside tables: (config file text, BGTASKEX_* variable and value or None,
#: what both say).
NESTED = [
    (
        '[concurrency]\nlock = "none"\nlease = "500ms"\n',
        ("BGTASKEX_CONCURRENCY", "lock=none lease=500ms"),
        f"lease: expected {LEASE.text}, got '500ms'",
    ),
    (
        '[concurrency]\nlock = "none"\npoll = "0"\n',
        ("BGTASKEX_CONCURRENCY", "lock=none poll=0"),
        f"poll: expected {POLL.text}, got '0'",
    ),
    (
        '[concurrency]\nlock = "none"\nworkers = "65"\n',
        ("BGTASKEX_CONCURRENCY", "lock=none workers=65"),
        f"workers: expected {WORKERS.text}, got '65'",
    ),
    (
        '[[processes]]\nname = "p"\nevery = "0"\n',
        None,
        f"every: expected {POSITIVE_DURATION.text}, got '0'",
    ),
    (
        '[[processes]]\nname = "p"\nevery = "1m"\nmax_execution_time = -5\n',
        None,
        f"max_execution_time: expected {POSITIVE_DURATION.text}, got -5",
    ),
]


@pytest.mark.parametrize(("body", "env", "says"), NESTED)
def test_settings_in_tables_say_their_rule(
    body: str,
    env: tuple[str, str] | None,
    says: str,
    tmp_path: Path,
    isolated: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "bgtaskex.toml"
    config.write_text(body, encoding="utf-8")
    assert says in _error(run_cli("--config", config, "processes"))
    if env is not None:
        monkeypatch.setenv(*env)
        assert says in _error(run_cli("processes"))


def test_every_rule_says_the_whole_of_what_it_takes() -> None:
    assert (
        POSITIVE_DURATION.text
        == "a duration > 0, like 30s, 5m, 2h or 7d, at most 36500d (100 years)"
    )
    assert DURATION.text == "a duration >= 0, like 30s, 5m, 2h or 7d, at most 36500d (100 years)"
    assert KEEP_FOR.text.endswith(", or never") and DURATION_OR_NEVER.text.endswith(", or never")
    assert LEASE.text == "a duration from 1s to 1d" and POLL.text == "a duration from 50ms to 1h"
    assert DurationRule(low=1.0, above=True).text.startswith("a duration > 1s")
