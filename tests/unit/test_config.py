from __future__ import annotations

from pathlib import Path

import pytest

from bgtaskex.config import Settings, load_settings, parse_duration
from bgtaskex.exceptions import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 30),
        ("30s", 30),
        ("2m", 120),
        ("1.5h", 5400),
        ("7d", 604800),
        (45, 45),
        ("250ms", 0.25),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "5 years", "-3", True])
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bgtaskex.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_defaults_without_any_source(tmp_path: Path) -> None:
    settings = load_settings(environ={"XDG_CONFIG_HOME": str(tmp_path)})
    assert settings == Settings()
    assert settings.max_execution_time == 30
    assert settings.max_attempts == 5
    assert settings.sqlite_synchronous == "FULL"
    assert settings.url.startswith("sqlite:///") and settings.url.endswith("bgtaskex.db")


def test_option_beats_env_beats_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'max_execution_time = "10s"\nmax_attempts = 2\nlog_level = "info"\n')
    env = {"BGTASKEX_MAX_EXECUTION_TIME": "20", "BGTASKEX_MAX_ATTEMPTS": "3"}
    assert load_settings(path, environ=env).max_execution_time == 20
    assert load_settings(path, environ={}).max_execution_time == 10
    settings = load_settings(path, {"max_execution_time": "40s"}, environ=env)
    assert settings.max_execution_time == 40
    assert settings.max_attempts == 3
    assert settings.log_level == "INFO"


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "max_attempts = 7\n")
    assert load_settings(environ={"BGTASKEX_CONFIG": str(path)}).max_attempts == 7


def test_imports_add_up_across_layers(tmp_path: Path) -> None:
    path = write(tmp_path, 'imports = ["a.jobs"]\n')
    settings = load_settings(
        path, {"imports": ["c.jobs", "a.jobs"]}, environ={"BGTASKEX_IMPORTS": "b.jobs, c.jobs"}
    )
    assert settings.imports == ("a.jobs", "b.jobs", "c.jobs")


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("max_execution_tme = 3\n", "unknown key 'max_execution_tme'"),
        ("max_attempts = 0\n", "max_attempts"),
        ('max_execution_time = "soon"\n', "max_execution_time"),
        ('imports = "not a list of modules!"\n', "imports"),
        ('sqlite_synchronous = "sometimes"\n', "sqlite_synchronous"),
        ("this is not toml\n", "invalid TOML"),
    ],
)
def test_bad_file_names_the_key(tmp_path: Path, body: str, needle: str) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert needle in message
    assert "\n" not in message


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="BGTASKEX_MAX_EXECUTION_TIME"):
        load_settings(environ={"BGTASKEX_MAX_EXECUTION_TIME": "abc", "HOME": str(tmp_path)})


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "nope.toml", environ={})


def test_lock_path_next_to_sqlite_file(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path}/x.db")
    assert settings.lock_path == tmp_path / "x.db.lock"
    other = Settings(database_url="postgresql+psycopg://u:p@h/db")
    assert other.lock_path.name.startswith("run-") and "p@h" not in str(other.lock_path)
    assert Settings(lock_file="/tmp/l").lock_path == Path("/tmp/l")


def test_shipped_example_config_is_valid() -> None:
    example = Path(__file__).resolve().parents[2] / "config" / "bgtaskex.toml"
    assert load_settings(example, environ={}) == Settings()


def test_stale_after_default_toml_env_never_and_bad_values(tmp_path: Path) -> None:
    assert load_settings(None, environ={}).stale_after == 300.0
    path = tmp_path / "bgtaskex.toml"
    path.write_text('stale_after = "15m"\n', encoding="utf-8")
    assert load_settings(path, environ={}).stale_after == 900.0
    assert load_settings(path, environ={"BGTASKEX_STALE_AFTER": "never"}).stale_after is None
    for bad in ("0", "-5m", "nan", "soon", "36501d"):
        with pytest.raises(ConfigError, match=r"^stale_after \(from BGTASKEX_STALE_AFTER\)"):
            load_settings(path, environ={"BGTASKEX_STALE_AFTER": bad})
