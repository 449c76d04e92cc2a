"""The README's "Your first action", followed to the letter (issue 15, point 1).

The snippets (the module, the config file, the shell's enqueue, the Python enqueue, the
crontab line, the systemd drop-in) are read from README.md itself, their paths moved
into a temporary directory (`/srv/myapp`, `/etc/bgtaskex`, `/var/lib/bgtaskex`) and
`/opt/bgtaskex/venv` replaced by the venv running the tests: a README that drifts from
what works fails here. Every command runs the venv's console script (not `python -m`,
which would put the working directory on the path) in a clean environment
(`env -i PATH=<venv bin>:/usr/bin:/bin HOME=<tmp>`), from the home directory or `/`,
never from the application's directory: as cron and systemd run it.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bgtaskex.store import Store
from tests.conftest import IN_CI

from .conftest import TIMEOUT

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
VENV = Path(sys.prefix)  # stands for /opt/bgtaskex/venv
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _section() -> list[tuple[str, str]]:
    """The fenced blocks (language, text) of the README's "Your first action"."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("\n## Your first action\n")
    end = readme.index("\n## ", start + 1)
    return FENCE.findall(readme[start:end])


def _block(lang: str, test: Callable[[str], bool]) -> str:
    found = [body for kind, body in _section() if kind == lang and test(body)]
    assert len(found) == 1, f"expected one {lang} block, found {len(found)}"
    return found[0]


@dataclass
class App:
    """The README's machine, moved into a temporary directory."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    def local(self, text: str) -> str:
        """The README's text with its paths in the temporary directory."""
        text = text.replace("/opt/bgtaskex/venv", str(VENV))
        for path in ("/srv/myapp", "/etc/bgtaskex", "/var/lib/bgtaskex"):
            text = text.replace(path, f"{self.root}{path}")
        return text

    def env(self) -> list[str]:
        return ["env", "-i", f"PATH={VENV}/bin:/usr/bin:/bin", f"HOME={self.home}"]

    def sh(self, script: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        """`script` run by /bin/sh, as cron runs a crontab line, in the clean environment."""
        return subprocess.run(
            [*self.env(), "/bin/sh", "-c", script],
            cwd=cwd or self.home,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )

    def ok(self, script: str, cwd: Path | None = None) -> str:
        result = self.sh(script, cwd)
        assert result.returncode == 0 and not result.stderr, _describe(result)
        return result.stdout

    @property
    def config(self) -> str:
        return f"{self.root}/etc/bgtaskex/bgtaskex.toml"

    def statuses(self) -> list[str]:
        out = self.ok(f"{VENV}/bin/bgtaskex --config {self.config} list --json")
        return [task["status"] for task in json.loads(out)]


def _describe(result: subprocess.CompletedProcess[str]) -> str:
    out, err = result.stdout, result.stderr
    return f"exit {result.returncode}: {result.args}\n--- stdout\n{out}--- stderr\n{err}"


@pytest.fixture
def app(tmp_path: Path) -> App:
    """Steps 2 and 3 of the README: the module, the config file, the database's directory;
    and step 4: a task queued from the shell, as the README shows it."""
    assert (VENV / "bin" / "bgtaskex").is_file(), "the tests' venv has no bgtaskex script"
    app = App(tmp_path)
    app.home.mkdir()
    module = app.local(_block("python", lambda b: b.startswith("# /srv/myapp/")))
    path = Path(module.splitlines()[0].removeprefix("# "))
    path.parent.mkdir(parents=True)
    (path.parent / "__init__.py").write_text("")
    path.write_text(module, encoding="utf-8")
    config = app.local(_block("toml", lambda b: b.startswith("# /etc/bgtaskex/")))
    Path(app.config).parent.mkdir(parents=True)
    Path(app.config).write_text(config, encoding="utf-8")
    assert config.splitlines()[0] == f"# {app.config}"
    install = _block("sh", lambda b: "install -d" in b)  # without root: no sudo, no owner
    app.ok(app.local(install).replace("sudo ", "").replace(" -o myapp -g myapp", ""))
    enqueue = _block("sh", lambda b: " enqueue " in b)
    said = app.ok(app.local(enqueue))
    shown = _section()[[body for _, body in _section()].index(enqueue) + 1]
    assert shown[0] == "" and said == shown[1], (said, shown)  # the output the README shows
    return app


def test_the_crontab_line_runs_the_first_action_in_a_clean_environment(app: App) -> None:
    enqueue = _block("python", lambda b: "bgtaskex.connect(" in b)
    script = app.root / "enqueue.py"
    script.write_text(app.local(enqueue), encoding="utf-8")
    app.ok(f"{VENV}/bin/python {script}")  # from the application's code
    assert app.statuses() == ["created", "created"]
    # `check` looks the waiting tasks' module up where a run would: pythonpath included.
    health = app.ok(f"{VENV}/bin/bgtaskex --config {app.config} check")
    assert health.startswith("BGTASKEX OK - 2 task(s) waiting"), health

    line = _block("cron", lambda b: True).strip()
    assert [
        b.strip() for kind, b in FENCE.findall((ROOT / "README.md").read_text()) if kind == "cron"
    ] == [
        line,
        line,
    ], "the README's crontab lines differ"
    command = app.local(line.split(None, 5)[5])  # cron runs what follows the 5 time fields
    for cwd in (app.home, Path("/")):
        ran = app.sh(command, cwd)
        assert ran.returncode == 0 and not ran.stderr and not ran.stdout, _describe(ran)
    assert app.statuses() == ["finished", "finished"]


def test_the_module_in_the_working_directory_is_pointed_out(app: App) -> None:
    """The README: run in /srv/myapp without the config, `--import myapp.jobs run-once`
    does not find `myapp` and says why; `--pythonpath .` finds it."""
    where = app.root / "srv" / "myapp"
    bare = f"BGTASKEX_DATABASE_URL=sqlite:///{app.root}/bare.db {VENV}/bin/bgtaskex"
    refused = app.sh(f"{bare} --import myapp.jobs run-once", cwd=where)
    assert refused.returncode == 2, _describe(refused)
    assert refused.stderr.count("\n") == 1, _describe(refused)
    assert f"{where}/myapp/jobs.py exists" in refused.stderr, _describe(refused)
    assert "--pythonpath ." in refused.stderr, _describe(refused)
    app.ok(f"{bare} --pythonpath . --import myapp.jobs run-once --quiet", cwd=where)
    gone = app.sh(f"{bare} --pythonpath /nonexistent run-once", cwd=where)
    assert gone.returncode == 2, _describe(gone)
    assert gone.stderr.startswith("bgtaskex: error: pythonpath: /nonexistent does not exist")


def test_the_daemon_runs_the_first_action_in_a_clean_environment(app: App) -> None:
    """As the shipped unit starts it: its Environment= line, no PYTHONPATH, from /."""
    unit = (ROOT / "systemd" / "bgtaskex.service").read_text(encoding="utf-8")
    environment = re.findall(r"^Environment=(.*)$", unit, re.MULTILINE)
    assert environment == ["BGTASKEX_CONFIG=/etc/bgtaskex/bgtaskex.toml"], environment
    start = re.search(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    assert start is not None
    daemon = subprocess.Popen(
        [*app.env(), app.local(environment[0]), *app.local(start[1]).split()],
        cwd="/",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    store = Store(f"sqlite:///{app.root}/var/lib/bgtaskex/bgtaskex.db")
    try:
        give_up = time.monotonic() + 30
        while store.get_task(1).status != "finished":  # the default process runs at start
            assert daemon.poll() is None, daemon.communicate()
            assert time.monotonic() < give_up, "the daemon did not finish the task in 30 s"
            time.sleep(0.05)
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=TIMEOUT)
    finally:
        store.close()
        if daemon.poll() is None:
            daemon.kill()
            daemon.communicate()
    assert daemon.returncode == 0, (out, err)
    assert "Traceback" not in err and "ERROR" not in err, err
    assert app.statuses() == ["finished"]


def test_the_systemd_drop_in_passes_systemd_analyze(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if IN_CI:
            pytest.fail("systemd-analyze is missing (CI=true: the units must be verified)")
        pytest.skip("systemd-analyze is not installed")
    steps = _block("sh", lambda b: "systemctl" in b)
    drop_in = re.search(r"printf '([^']*)'", steps)
    assert drop_in is not None, steps
    app = App(tmp_path)
    units = tmp_path / "units"
    units.mkdir()
    names = ("bgtaskex.service", "bgtaskex-run.service", "bgtaskex-run.timer")
    for name in names:
        assert name in steps, name
        text = (ROOT / "systemd" / name).read_text(encoding="utf-8")
        (units / name).write_text(app.local(text), encoding="utf-8")
        if name.endswith(".service"):
            (units / f"{name}.d").mkdir()
            conf = drop_in[1].encode().decode("unicode_escape")
            (units / f"{name}.d" / "myapp.conf").write_text(conf, encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", *(str(units / name) for name in names)],
        env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    about_ours = [
        line for line in (result.stdout + result.stderr).splitlines() if str(units) in line
    ]
    assert result.returncode == 0 and about_ours == [], result.stdout + result.stderr
    assert "User=myapp" in conf
