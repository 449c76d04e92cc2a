"""`[concurrency]`: the table, its one-line form from the environment, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from bgtaskex.concurrency import Concurrency
from bgtaskex.config import load_settings
from bgtaskex.exceptions import ConfigError


def settings_from(tmp_path: Path, toml: str) -> Concurrency:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(toml, encoding="utf-8")
    return load_settings(path, environ={}).concurrency


def test_default_is_one_run_per_host() -> None:
    found = load_settings(environ={}).concurrency
    assert found == Concurrency("file", 1, 60.0, 1.0)
    assert not found.claims


def test_the_table(tmp_path: Path) -> None:
    found = settings_from(
        tmp_path, '[concurrency]\nlock = "none"\nworkers = 4\nlease = "2m"\npoll = "500ms"\n'
    )
    assert found == Concurrency("none", 4, 120.0, 0.5)
    assert found.claims
    assert "4 worker(s)" in found.describe()


def test_the_one_line_form_from_the_environment() -> None:
    found = load_settings(
        environ={"BGTASKEX_CONCURRENCY": "lock=none, workers=8 lease=10s"}
    ).concurrency
    assert found == Concurrency("none", 8, 10.0, 1.0)
    assert load_settings(environ={"BGTASKEX_CONCURRENCY": "lock=database"}).concurrency.lock == (
        "database"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("lock=mutex", "lock must be one of file, database, none"),
        ("lock=none workers=0", "workers: expected a whole number from 1 to 64"),
        ("lock=none workers=65", "workers: expected a whole number from 1 to 64"),
        ("lock=none workers=two", "workers: expected a whole number from 1 to 64"),
        ("workers=4", 'workers > 1 needs lock = "none"'),
        ("lock=none lease=500ms", "lease: expected a duration from 1s to 1d"),
        ("lock=none poll=0", "poll: expected a duration from 50ms to 1h"),
        ("lock=none threads=4", "unknown key 'threads'"),
        ("lock", "expected key=value"),
    ],
)
def test_bad_values_are_one_line_naming_the_source(value: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={"BGTASKEX_CONCURRENCY": value})
    text = str(raised.value)
    assert message in text and "BGTASKEX_CONCURRENCY" in text and "\n" not in text


def test_a_bad_table_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"concurrency \(from config file .*\): expected a table"):
        settings_from(tmp_path, "concurrency = 3\n")


def test_concurrency_is_an_immutable_value() -> None:
    """A plain class since the idle `run-once` imports no dataclasses: it still takes a
    lock mode's name, compares and hashes by value, and cannot be changed."""
    from bgtaskex.concurrency import LockMode

    given = Concurrency("none", 4)
    assert given.lock is LockMode.NONE and given.claims
    assert given == Concurrency(LockMode.NONE, 4) and hash(given) == hash(Concurrency("none", 4))
    assert given != Concurrency("none", 2)
    with pytest.raises(AttributeError):
        given.workers = 8  # type: ignore[misc]
    assert (
        repr(given) == "Concurrency(lock=<LockMode.NONE: 'none'>, workers=4, lease=60.0, poll=1.0)"
    )


def test_settings_with_their_concurrency_survive_pickling() -> None:
    """As the frozen dataclasses they were (multiprocessing with spawn pickles them)."""
    import pickle

    from bgtaskex.config import Settings

    settings = Settings(database_url="sqlite:///x.db", concurrency=Concurrency("none", 2, 30.0))
    assert pickle.loads(pickle.dumps(settings)) == settings
