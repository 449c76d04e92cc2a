"""Deploy slips that must not fail a queue (issue 12, point 7), with the real CLI.

A task enqueued by the application (its module on the path, `--import` given) meets a
run that lacks one of them, as a crontab or a systemd unit without the application's
PYTHONPATH does: the task is left as it was, the run says so in one line and exits 6
(so cron mails it); `check` warns about such tasks; a declared module that cannot be
found, or a config no run can use, is refused at the start with exit 2 even when
nothing is due.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bgtaskex.client import connect
from bgtaskex.store import Store

from .conftest import Bgx, describe
from .test_daemon import Daemon, process, write_config

pytestmark = pytest.mark.timeout(120)

JOBS = """\
from bgtaskex import Action


class Hello(Action):
    def execute(self, deadline: float) -> bool:
        return True
"""


@pytest.fixture
def app(tmp_path: Path, cli_env: dict[str, str]) -> dict[str, str]:
    """The application's environment: its module `slipjobs` on PYTHONPATH."""
    where = tmp_path / "app"
    where.mkdir()
    (where / "slipjobs.py").write_text(JOBS, encoding="utf-8")
    return {"PYTHONPATH": f"{where}{os.pathsep}{cli_env['PYTHONPATH']}"}


def stderr_line(result: subprocess.CompletedProcess[str]) -> str:
    """The one line on stderr, with no traceback."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, describe(result)
    return lines[0]


def action_state(url: str, task_id: int) -> tuple[str, list[tuple[str, int]]]:
    """The task's status and its actions' (status, attempts), read in-process."""
    store = Store(url)
    try:
        task = store.get_task(task_id)
    finally:
        store.close()
    return str(task.status), [(str(a.status), a.attempts) for a in task.actions]


def test_a_task_whose_module_the_run_cannot_import_waits_and_the_run_exits_6(
    bgx: Bgx, db_url: str, app: dict[str, str]
) -> None:
    url = ("--database-url", db_url)
    enqueue = ("--import", "slipjobs", "enqueue", "slip", "slipjobs:Hello", "-q")
    task_id = int(bgx.ok(*url, *enqueue, env=app).stdout)
    other = int(bgx.ok(*url, "enqueue", "other", "bgtaskex.examples:NothingToDo", "-q").stdout)
    before = action_state(db_url, task_id)
    assert before == ("created", [("pending", 0)])

    cron = bgx(*url, "run-once")  # cron: neither --import nor the application's path
    assert cron.returncode == 6, describe(cron)
    line = stderr_line(cron)
    assert "slipjobs" in line and "--import" in line, line
    assert "1 left waiting (cannot import slipjobs)" in cron.stdout, describe(cron)
    assert action_state(db_url, task_id) == before  # status and attempts unchanged
    assert action_state(db_url, other)[0] == "finished"  # the run went on

    report = bgx(*url, "run-once", "--json")
    assert report.returncode == 6, describe(report)
    stderr_line(report)
    found = json.loads(report.stdout)
    assert (found["left_waiting"], found["missing_modules"]) == (1, ["slipjobs"])
    assert found["max_overrun"] == 0
    assert action_state(db_url, task_id) == before

    fixed = bgx.ok(*url, "--import", "slipjobs", "run-once", env=app)
    assert "1 finished" in fixed.stdout, describe(fixed)
    assert action_state(db_url, task_id) == ("finished", [("done", 0)])


def test_check_warns_about_tasks_waiting_for_a_module(
    bgx: Bgx, sqlite_url: str, app: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    url = ("--database-url", sqlite_url)
    monkeypatch.syspath_prepend(app["PYTHONPATH"].split(os.pathsep)[0])
    with connect(sqlite_url) as client:  # the application queues (cheaper than the CLI)
        for name in ("one", "two", "three"):
            client.enqueue(name, ["slipjobs:Hello", "bgtaskex.examples:NothingToDo"])
        client.enqueue("fine", ["bgtaskex.examples:NothingToDo"])
    sys.modules.pop("slipjobs", None)  # imported by the client: not the test process's

    undeclared = bgx(*url, "check", env=app)
    assert undeclared.returncode == 1, describe(undeclared)
    assert undeclared.stdout.startswith(
        "BGTASKEX WARNING - 3 task(s) wait for a module that cannot be imported: "
        "slipjobs (not declared) (declare it with --import MODULE"
    ), describe(undeclared)

    off_path = bgx(*url, "--import", "slipjobs", "check")  # declared, not on the path
    assert off_path.returncode == 1, describe(off_path)
    assert "3 task(s) wait for a module that cannot be imported: slipjobs (not found)" in (
        off_path.stdout
    ), describe(off_path)
    # #15 attack: the advice matches the reason (it said "declare it" for this one).
    assert "declare it" not in off_path.stdout, describe(off_path)
    assert "(put it on the Python path: install it" in off_path.stdout, describe(off_path)

    gone = str(Path(app["PYTHONPATH"].split(os.pathsep)[0]) / "removed")
    named = bgx(*url, "--import", "slipjobs", "--pythonpath", gone, "check")
    assert named.returncode == 1, describe(named)
    assert f"names a directory that does not exist: {gone})" in named.stdout, describe(named)

    fine = bgx(*url, "--import", "slipjobs", "check", env=app)
    assert fine.returncode == 0 and fine.stdout.startswith("BGTASKEX OK - "), describe(fine)


@pytest.mark.parametrize("declared", ["option", "env", "config"])
def test_a_declared_module_that_cannot_be_found_is_refused_even_when_idle(
    bgx: Bgx, sqlite_url: str, tmp_path: Path, declared: str
) -> None:
    config = tmp_path / "bgtaskex.toml"
    config.write_text('imports = ["slipjobs"]\n', encoding="utf-8")
    how = {
        "option": (["--import", "slipjobs"], {}),
        "env": ([], {"BGTASKEX_IMPORTS": "bgtaskex.examples,slipjobs"}),
        "config": (["--config", str(config)], {}),
    }
    args, env = how[declared]
    idle = bgx("--database-url", sqlite_url, *args, "run-once", env=env)
    assert idle.returncode == 2, describe(idle)
    assert "'slipjobs'" in stderr_line(idle) and "cannot be found" in idle.stderr
    assert idle.stdout == ""
    daemon = bgx("--database-url", sqlite_url, *args, "daemon", env=env, timeout=30)
    assert daemon.returncode == 2, describe(daemon)
    assert "'slipjobs'" in stderr_line(daemon)


def test_a_declared_module_whose_import_fails_is_refused(
    bgx: Bgx, sqlite_url: str, tmp_path: Path, app: dict[str, str]
) -> None:
    broken = Path(app["PYTHONPATH"].split(os.pathsep)[0]) / "slipbroken.py"
    broken.write_text("import no_such_dependency_of_slipbroken\n", encoding="utf-8")
    url = ("--database-url", sqlite_url)
    bgx.ok(*url, "enqueue", "fine", "bgtaskex.examples:NothingToDo")
    run = bgx(*url, "--import", "slipbroken", "run-once", env=app)
    assert run.returncode == 2, describe(run)
    assert "'slipbroken' cannot be imported: ModuleNotFoundError" in stderr_line(run)
    daemon = bgx(*url, "--import", "slipbroken", "daemon", env=app, timeout=30)
    assert daemon.returncode == 2, describe(daemon)
    assert "'slipbroken' cannot be imported" in stderr_line(daemon)


@pytest.mark.parametrize("lock", ["none", "database"])
def test_a_config_no_run_can_use_is_refused_even_when_idle(
    bgx: Bgx, sqlite_url: str, lock: str
) -> None:
    env = {"BGTASKEX_CONCURRENCY": f"lock={lock}"}
    idle = bgx("--database-url", sqlite_url, "run-once", env=env)
    assert idle.returncode == 2, describe(idle)
    assert f'lock = "{lock}" needs PostgreSQL or MariaDB/MySQL' in stderr_line(idle)
    daemon = bgx("--database-url", sqlite_url, "daemon", env=env, timeout=30)
    assert daemon.returncode == 2, describe(daemon)
    stderr_line(daemon)


def test_the_daemon_leaves_such_tasks_waiting_and_keeps_running(
    bgx: Bgx, sqlite_url: str, tmp_path: Path, app: dict[str, str]
) -> None:
    enqueue = ("--import", "slipjobs", "enqueue", "slip", "slipjobs:Hello", "-q")
    task_id = int(bgx.ok("--database-url", sqlite_url, *enqueue, env=app).stdout)
    config = write_config(tmp_path / "daemon.toml", sqlite_url, process("main"))
    daemon = Daemon(bgx, tmp_path, config).started()  # the application is not on its path

    def left_twice() -> bool:
        return sum("1 left waiting (cannot import slipjobs)" in r for r in daemon.runs()) >= 2

    daemon.wait_for(left_twice, "two runs that left the task waiting")
    assert any("slipjobs" in line and "--import" in line for line in daemon.log().splitlines())
    daemon.stop()
    assert action_state(sqlite_url, task_id) == ("created", [("pending", 0)])


def test_a_run_refused_at_start_is_recorded_and_check_warns(
    bgx: Bgx, sqlite_url: str, tmp_path: Path
) -> None:
    """#15 attack: a run-once refused at start (exit 2: a declared module that
    raises at import, a pythonpath directory gone) left no record and `check` said OK.
    Now one row, outcome "refused", its error masked; none without the schema."""
    url = ("--database-url", sqlite_url)
    gone = ("--pythonpath", str(tmp_path / "gone"))
    refused = bgx(*url, *gone, "run-once")
    assert refused.returncode == 2, describe(refused)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # no schema: no record

    bgx.ok(*url, "enqueue", "due", "bgtaskex.examples:NothingToDo", "-q")
    where = tmp_path / "broken"
    where.mkdir()
    (where / "brokenjobs.py").write_text(
        'raise KeyError("postgresql://app:s3cret@db.example/app")\n', encoding="utf-8"
    )
    broken = bgx(*url, "--pythonpath", where, "--import", "brokenjobs", "run-once")
    assert broken.returncode == 2, describe(broken)
    check = bgx(*url, "check")
    assert check.returncode == 1, describe(check)
    assert "was refused at start: declared module 'brokenjobs' cannot be imported: KeyError" in (
        check.stdout
    ), describe(check)
    assert "s3cret" not in check.stdout and "db.example" in check.stdout, describe(check)

    assert bgx(*url, *gone, "run-once").returncode == 2  # refused even when idle
    newest, older = bgx.json(*url, "runs", "--failed", "--json")
    assert (newest["outcome"], older["outcome"]) == ("refused", "refused"), (newest, older)
    assert "gone does not exist" in newest["error"] and newest["ended_at"], newest

    bgx.ok(*url, "run-once", "-q")  # fixed: the warning goes with the next run ok
    assert "refused" not in bgx(*url, "check").stdout
