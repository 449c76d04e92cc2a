"""The `pythonpath` setting: how it is read (file, environment, option), where it goes on
`sys.path`, and what `run-once`/`daemon` say when it or a declared module is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtaskex.config import Settings, load_settings
from bgtaskex.exceptions import ConfigError
from bgtaskex.pythonpath import cwd_hint, import_hint, use
from bgtaskex.run.preflight import check_runnable, import_declared
from tests.support.cli import isolate, run_cli


@pytest.fixture(autouse=True)
def own_sys_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test changes a copy of sys.path, and forgets the modules it imported."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield
    for name in [m for m in sys.modules if m.startswith("ppjobs")]:
        del sys.modules[name]


def _app(root: Path) -> Path:
    """An application directory holding the package `ppjobs` (ppjobs/tasks.py)."""
    (root / "ppjobs").mkdir(parents=True)
    (root / "ppjobs" / "__init__.py").write_text("")
    (root / "ppjobs" / "tasks.py").write_text(
        "from bgtaskex import Action\n\n"
        "class Hello(Action):\n"
        "    def execute(self, deadline: float) -> bool:\n"
        "        return True\n"
    )
    return root


def test_file_entries_are_relative_to_the_file_env_and_options_to_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc, work = tmp_path / "etc", tmp_path / "work"
    etc.mkdir()
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = etc / "b.toml"
    config.write_text('pythonpath = ["app", "/srv/abs", "~/lib", "../shared"]\n')
    settings = load_settings(Path("..") / "etc" / "b.toml", environ={})
    assert settings.pythonpath == (
        str(etc / "app"),
        "/srv/abs",
        str(tmp_path / "home" / "lib"),
        str(tmp_path / "shared"),
    )
    env = {"BGTASKEX_PYTHONPATH": f"envdir{os.pathsep}{os.pathsep}/srv/e{os.pathsep}"}
    assert load_settings(None, environ=env).pythonpath == (str(work / "envdir"), "/srv/e")
    cli = load_settings(None, {"pythonpath": ["."]}, environ={})
    assert cli.pythonpath == (str(work),)


def test_layers_add_up_options_first_then_env_then_file(tmp_path: Path) -> None:
    config = tmp_path / "b.toml"
    config.write_text('pythonpath = ["/f1", "/f2", "/both"]\n')
    env = {"BGTASKEX_PYTHONPATH": f"/e1{os.pathsep}/both"}
    settings = load_settings(config, {"pythonpath": ["/o1", "/o2", "/o1"]}, environ=env)
    # Options win over the environment, the environment over the file: first on sys.path.
    assert settings.pythonpath == ("/o1", "/o2", "/e1", "/both", "/f1", "/f2")
    assert load_settings(None, environ={}).pythonpath == ()


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ("pythonpath = 5", "pythonpath (from config file"),
        ('pythonpath = ["/a", 1]', "expected a list of directories"),
        ('pythonpath = [["/a"]]', "expected a list of directories"),
        ('pythonpath = ["/a\\u0000b"]', "cannot hold a NUL character"),
    ],
)
def test_a_bad_value_names_the_key_and_the_file(tmp_path: Path, body: str, needle: str) -> None:
    config = tmp_path / "b.toml"
    config.write_text(body + "\n")
    with pytest.raises(ConfigError, match=r"pythonpath \(from config file .*b\.toml\)") as bad:
        load_settings(config, environ={})
    assert needle in str(bad.value)


def test_use_prepends_in_order_once_each() -> None:
    sys.path[:] = ["/x", "/b", "/y"]
    use(["/a", "/b", "/a"])
    assert sys.path == ["/a", "/b", "/x", "/y"]
    use(["/a", "/b"])
    assert sys.path == ["/a", "/b", "/x", "/y"]
    use(["/c"])  # a reload that adds a directory: the old ones stay behind it
    assert sys.path == ["/c", "/a", "/b", "/x", "/y"]


def _installed() -> list[int]:
    """Where the installed packages are on sys.path."""
    return [i for i, entry in enumerate(sys.path) if "-packages" in entry]


def test_use_puts_them_after_the_standard_library_before_the_installed_packages() -> None:
    stdlib = os.path.dirname(os.__file__)
    zipped = os.path.join(os.path.dirname(stdlib), "python311.zip")
    dynload = os.path.join(stdlib, "lib-dynload")
    site = "/venv/lib/python3.11/site-packages"
    sys.path[:] = ["/venv/bin", zipped, stdlib, dynload, site]
    use(["/app", "/lib"])
    assert sys.path == ["/venv/bin", zipped, stdlib, dynload, "/app", "/lib", site]
    use(["/app", "/lib"])
    assert sys.path == ["/venv/bin", zipped, stdlib, dynload, "/app", "/lib", site]


def test_an_application_module_named_like_the_standard_library_shadows_nothing(
    tmp_path: Path,
) -> None:
    """An application's own `email/` package, `signal.py` and `queue.py` beside its
    jobs: pythonpath goes after the standard library, so bgtaskex's own imports (signal
    handling, importlib.metadata's email.message, the daemon's queue) find the real
    ones. Put first, as PYTHONPATH would, every run died of an internal error."""
    app = _app(tmp_path / "app")
    (app / "email").mkdir()
    (app / "email" / "__init__.py").write_text("def send(to, body):\n    pass\n")
    (app / "signal.py").write_text("x = 1\n")
    (app / "queue.py").write_text("# the application's own\n")
    url = f"sqlite:///{tmp_path / 'q.db'}"
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    common = [
        sys.executable, "-m", "bgtaskex", "--database-url", url, "--pythonpath", str(app),
        "--import", "ppjobs.tasks",
    ]  # fmt: skip
    for args in (["enqueue", "t", "ppjobs.tasks:Hello"], ["run-once"], ["show", "1", "--json"]):
        done = subprocess.run(
            [*common, *args], cwd="/", env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, (args, done.stderr)
    assert json.loads(done.stdout)["status"] == "finished"


def test_check_runnable_puts_it_on_the_path_before_looking(tmp_path: Path) -> None:
    app = _app(tmp_path / "app")
    url = f"sqlite:///{tmp_path / 'x.db'}"
    without = Settings(database_url=url, imports=("ppjobs.tasks",))
    with pytest.raises(ConfigError, match=r"'ppjobs\.tasks' .* cannot be found"):
        check_runnable(without)
    settings = Settings(database_url=url, imports=("ppjobs.tasks",), pythonpath=(str(app),))
    check_runnable(settings)
    assert sys.path.index(str(app)) < min(_installed())
    assert "ppjobs" not in sys.modules  # only looked up
    import_declared(settings)
    assert sys.modules["ppjobs.tasks"].__file__ == str(app / "ppjobs" / "tasks.py")


def test_a_directory_that_is_not_there_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    (tmp_path / "file").write_text("")
    for entry, what in ((tmp_path / "nope", "does not exist"), (tmp_path / "file", "is not a")):
        with pytest.raises(ConfigError) as bad:
            check_runnable(Settings(database_url=url, pythonpath=(str(entry),)))
        assert str(bad.value).startswith(f"pythonpath: {entry} {what}")
        assert str(entry) not in sys.path
    # another user's directory, mode 0700 (root, who runs the tests, reads any)
    os_access = os.access
    readable = tmp_path / "theirs"
    readable.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            os, "access", lambda path, mode: path != str(readable) and os_access(path, mode)
        )
        with pytest.raises(ConfigError, match=r"theirs cannot be read by this user"):
            check_runnable(Settings(database_url=url, pythonpath=(str(readable),)))


def test_a_module_in_the_working_directory_is_pointed_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _app(tmp_path / "app")
    sys.path[:] = [p for p in sys.path if p not in ("", ".", str(app))]
    monkeypatch.chdir(app)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", imports=("ppjobs.tasks",))
    with pytest.raises(ConfigError) as missing:
        check_runnable(settings)
    message = str(missing.value)
    assert f"{app / 'ppjobs' / 'tasks.py'} exists" in message
    assert f'--pythonpath . or pythonpath = ["{app}"]' in message
    with pytest.raises(ConfigError, match=r"--pythonpath \. or"):
        import_declared(settings)
    assert cwd_hint("ppjobs.other") == ""  # not there: no hint
    missing_dependency = ModuleNotFoundError("No module named 'requests'", name="requests")
    assert import_hint("ppjobs.tasks", missing_dependency) == ""  # ppjobs.tasks was found
    missing_package = ModuleNotFoundError("No module named 'ppjobs'", name="ppjobs")
    assert import_hint("ppjobs.tasks", missing_package) == cwd_hint("ppjobs.tasks") != ""
    monkeypatch.chdir(tmp_path)
    assert cwd_hint("ppjobs.tasks") == ""


def test_cli_option_adds_to_env_and_the_hint_reaches_enqueue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate(monkeypatch, tmp_path)
    app = _app(tmp_path / "app")
    sys.path[:] = [p for p in sys.path if p not in ("", ".", str(app))]
    monkeypatch.chdir(app)
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    enqueue = (
        "--database-url",
        url,
        "--import",
        "ppjobs.tasks",
        "enqueue",
        "t",
        "ppjobs.tasks:Hello",
    )
    refused = run_cli(*enqueue)
    assert refused.code == 2, refused.describe()
    assert "--pythonpath ." in refused.err and refused.err.count("\n") == 1
    monkeypatch.setenv("BGTASKEX_PYTHONPATH", str(tmp_path / "elsewhere"))
    queued = run_cli("--pythonpath", ".", *enqueue)
    assert queued.code == 0, queued.describe()
    at = sys.path.index(str(app))
    assert sys.path[at : at + 2] == [str(app), str(tmp_path / "elsewhere")]
    (tmp_path / "elsewhere").mkdir()
    done = run_cli(
        "--pythonpath", ".", "--database-url", url, "--import", "ppjobs.tasks", "run-once"
    )
    assert done.code == 0 and "1 finished" in done.out, done.describe()
    gone = run_cli("--pythonpath", "nope", "--database-url", url, "run-once")
    assert gone.code == 2, gone.describe()
    assert gone.err == f"bgtaskex: error: pythonpath: {app / 'nope'} does not exist " + (
        "(the config's pythonpath, BGTASKEX_PYTHONPATH or --pythonpath)\n"
    )
