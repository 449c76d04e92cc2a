"""The checks before a run starts (preflight.py) and the `max_params_bytes` setting."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtaskex.concurrency import Concurrency
from bgtaskex.config import Settings, load_settings, params_size
from bgtaskex.exceptions import ConfigError
from bgtaskex.run.preflight import check_runnable, findable, import_declared


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`preflightpkg` on sys.path, whose __init__ raises: importing it is a failure."""
    root = tmp_path / "path"
    (root / "preflightpkg" / "inner").mkdir(parents=True)
    (root / "preflightpkg" / "__init__.py").write_text("raise RuntimeError('imported')\n")
    (root / "preflightpkg" / "jobs.py").write_text("")
    (root / "preflightpkg" / "inner" / "__init__.py").write_text("")
    (root / "preflightpkg" / "inner" / "deep.py").write_text("")
    (root / "preflightns" / "sub").mkdir(parents=True)  # a namespace package
    (root / "preflightns" / "sub" / "mod.py").write_text("")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in [m for m in sys.modules if m.startswith(("preflightpkg", "preflightns"))]:
        del sys.modules[name]


@pytest.mark.parametrize(
    ("module", "found"),
    [
        ("preflightpkg", True),
        ("preflightpkg.jobs", True),
        ("preflightpkg.inner.deep", True),
        ("preflightns.sub", True),
        ("preflightns.sub.mod", True),  # cannot tell: taken as found
        ("preflightpkg.nope", False),
        ("preflightpkg.jobs.nope", False),  # a module is no package
        ("preflightnope", False),
        ("preflightnope.jobs", False),
        ("json.decoder", True),
    ],
)
def test_findable_looks_without_importing(package: Path, module: str, found: bool) -> None:
    assert findable(module) is found
    assert not any(m.startswith("preflightpkg") for m in sys.modules)  # __init__ never ran


def test_check_runnable_refuses_what_no_run_can_use(package: Path, tmp_path: Path) -> None:
    sqlite = f"sqlite:///{tmp_path / 'x.db'}"
    check_runnable(Settings(database_url=sqlite, imports=("preflightpkg.jobs",)))
    with pytest.raises(ConfigError, match=r"'preflightpkg.nope' .* cannot be found"):
        check_runnable(Settings(database_url=sqlite, imports=("json", "preflightpkg.nope")))
    for lock in ("none", "database"):
        for url in (sqlite, "sqlite://", "sqlite+pysqlite:///x.db"):
            with pytest.raises(ConfigError, match=f'lock = "{lock}" needs PostgreSQL'):
                check_runnable(Settings(database_url=url, concurrency=Concurrency(lock=lock)))
        check_runnable(
            Settings(database_url="postgresql+psycopg://h/db", concurrency=Concurrency(lock=lock))
        )


def test_import_declared_names_the_module_that_fails(package: Path) -> None:
    import_declared(Settings(imports=("json",)))
    with pytest.raises(ConfigError) as failed:
        import_declared(Settings(imports=("json", "preflightpkg.jobs")))
    assert str(failed.value) == (
        "declared module 'preflightpkg.jobs' cannot be imported: RuntimeError: imported"
    )


def test_max_params_bytes_setting(tmp_path: Path) -> None:
    assert Settings().max_params_bytes == 1024 * 1024
    config = tmp_path / "c.toml"
    config.write_text('max_params_bytes = "512KiB"\n')
    assert load_settings(config, environ={}).max_params_bytes == 512 * 1024
    env = {"BGTASKEX_MAX_PARAMS_BYTES": "2MiB"}
    assert load_settings(config, environ=env).max_params_bytes == 2 * 1024 * 1024
    assert load_settings(None, {"max_params_bytes": 100}, environ={}).max_params_bytes == 100
    for bad in ("0", "1.5MiB", "1 MB", "-1", "lots"):
        with pytest.raises(ConfigError, match="BGTASKEX_MAX_PARAMS_BYTES"):
            load_settings(None, environ={"BGTASKEX_MAX_PARAMS_BYTES": bad})


def test_params_size_is_the_json_text_the_database_gets() -> None:
    assert params_size({}) == 2
    assert params_size({"a": 1}) == len('{"a": 1}')
    assert params_size({"t": "é"}) == len('{"t": "\\u00e9"}')
