"""What bgtaskex writes on disk: private whatever the umask, and a full disk is exit 4.

* The state directory it creates is 0700; the SQLite database, its `-wal` and `-shm`,
  and the lock file are 0600, under umask 000 as under 022 (the CLI in a subprocess
  with that umask).
* A full file system (a real tmpfs of 256 KiB, filled up: it needs root to mount) under
  the lock file or under the SQLite database ends `run-once` with exit 4 and one line.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.conftest import (
    TIMEOUT,
    Bgx,
    command,
    describe,
    finish,
    hook_started,
    scripted,
    wait_until,
)
from tests.fill_disk import fill

IMPORT = ("--import", "tests.scripted")

pytestmark = pytest.mark.timeout(180)


def _spawn(bgx: Bgx, umask: int, *args: object) -> subprocess.Popen[str]:
    """`bgtaskex ARGS` started under `umask` (killed at the end of the test if need be)."""
    proc = subprocess.Popen(
        command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bgx.env,
        preexec_fn=lambda: os.umask(umask),
    )
    bgx.started.append(proc)
    return proc


def _run(bgx: Bgx, umask: int, *args: object) -> subprocess.CompletedProcess[str]:
    proc = _spawn(bgx, umask, *args)
    code, out, err = finish(proc, TIMEOUT)
    return subprocess.CompletedProcess(proc.args, code, out, err)


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.mark.parametrize("umask", [0o000, 0o022], ids=["umask000", "umask022"])
def test_what_bgtaskex_creates_is_private_whatever_the_umask(
    bgx: Bgx, tmp_path: Path, umask: int
) -> None:
    data = Path(bgx.env["XDG_DATA_HOME"]) / "bgtaskex"  # the default database's directory
    missing = [d for d in (data, *data.parents) if not d.exists()]
    log = tmp_path / "calls.jsonl"
    task = scripted(log, {"execute": ["until-stop"]})
    added = _run(bgx, umask, *IMPORT, "enqueue", "slow", task, "-q")
    assert added.returncode == 0, describe(added)
    assert missing and {d: _mode(d) for d in missing} == {d: 0o700 for d in missing}

    # While a run works, the database has its -wal and -shm files, and the lock is held.
    holder = _spawn(bgx, umask, *IMPORT, "run-once", "--max-execution-time", "60")
    wait_until(hook_started(log, "execute", holder.pid), "the run's execute", proc=holder)
    names = ["bgtaskex.db", "bgtaskex.db-wal", "bgtaskex.db-shm", "bgtaskex.db.lock"]
    assert {n: _mode(data / n) for n in names} == {n: 0o600 for n in names}
    holder.send_signal(signal.SIGTERM)
    code, out, err = finish(holder)
    assert code == 0 and "Traceback" not in err, (out, err)

    # A database URL of the user's own: its file too (in a directory of theirs).
    mine = tmp_path / "mine"
    mine.mkdir()
    added = _run(
        bgx,
        umask,
        "--database-url",
        f"sqlite:///{mine / 'q.db'}",
        *IMPORT,
        "enqueue",
        "t",
        "tests.scripted:Noop",
    )
    assert added.returncode == 0, describe(added)
    assert _mode(mine / "q.db") == 0o600


# -- a full disk ---------------------------------------------------------------------------


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs of 1 MiB (needs root, or CAP_SYS_ADMIN), unmounted at the end: room
    for a fresh database, its WAL during the migrations and its -shm, and no more."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _one_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    """The one `bgtaskex: error:` line; other stderr lines may only be log lines."""
    assert result.returncode == code, describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    errors = [line for line in result.stderr.splitlines() if line.startswith("bgtaskex: error:")]
    assert len(errors) == 1, describe(result)
    return errors[0]


def test_a_full_disk_under_the_lock_file_is_exit_4_in_one_line(
    bgx: Bgx, db_url: str, tiny_fs: Path
) -> None:
    """The lock file cannot name its holder: the run stops before any task, with one
    line and exit 4 (it was an internal error, exit 1), and runs once there is room."""
    lock = tiny_fs / "run.lock"
    noop = bgx.ok("--database-url", db_url, *IMPORT, "enqueue", "n", "tests.scripted:Noop", "-q")
    filler = fill(tiny_fs)
    args = ("--database-url", db_url, *IMPORT, "run-once", "--lock-file", lock)
    run = bgx(*args)
    assert run.stdout == "", describe(run)
    assert run.stderr == f"bgtaskex: error: lock file {lock}: No space left on device\n"
    assert run.returncode == 4, describe(run)
    assert bgx.show(db_url, int(noop.stdout))["status"] == "created"
    filler.unlink()
    bgx.ok(*args)
    assert bgx.show(db_url, int(noop.stdout))["status"] == "finished"


def test_a_disk_that_fills_up_under_sqlite_during_a_run_is_exit_4_in_one_line(
    bgx: Bgx, tmp_path: Path, tiny_fs: Path
) -> None:
    """An action fills the disk of the SQLite database: the run's next commit fails,
    and the run ends with exit 4 and one error line (the log may say it tried the write
    again). With room again, a run finishes the task."""
    url = f"sqlite:///{tiny_fs / 'q.db'}"
    fills = json.dumps({"directory": str(tiny_fs), "marker": str(tmp_path / "filled")})
    imports = ("--import", "tests.fill_disk")
    added = bgx.ok(
        "--database-url",
        url,
        *imports,
        "enqueue",
        "fill",
        f"tests.fill_disk:FillDisk={fills}",
        "-q",
    )
    run = bgx("--database-url", url, *imports, "run-once")
    line = _one_error(run, 4)
    # SQLite's words, or the OS's when the lock file's write is the one that hits it
    full = ("database or disk is full", "disk I/O error", "No space left on device")
    assert any(words in line for words in full), describe(run)
    (tiny_fs / "filler").unlink()
    bgx.ok("--database-url", url, *imports, "run-once")
    assert bgx.show(url, int(added.stdout))["status"] == "finished"


def test_a_full_disk_at_start_is_exit_4_in_one_line(bgx: Bgx, tiny_fs: Path) -> None:
    """No room even to open the database (its -shm): one line, exit 4."""
    url = f"sqlite:///{tiny_fs / 'q.db'}"
    bgx.ok("--database-url", url, *IMPORT, "enqueue", "n", "tests.scripted:Noop", "-q")
    fill(tiny_fs)
    for args in (("run-once",), ("enqueue", "m", "tests.scripted:Noop")):
        _one_error(bgx("--database-url", url, *IMPORT, *args), 4)


def test_a_state_directory_that_cannot_be_made_is_exit_2_in_one_line(
    bgx: Bgx, tmp_path: Path
) -> None:
    """The default database's directory (and the lock's) cannot be created, as its
    path runs under a file: a setting that cannot serve, one line and exit 2 (creating
    the database's was an internal error, exit 1)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {"XDG_DATA_HOME": str(blocker / "data")}
    added = bgx(*IMPORT, "enqueue", "n", "tests.scripted:Noop", env=env)
    assert "Not a directory" in _one_error(added, 2), describe(added)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    bgx.ok("--database-url", url, *IMPORT, "enqueue", "n", "tests.scripted:Noop")
    run = bgx("--database-url", url, *IMPORT, "run-once", "--lock-file", blocker / "l" / "run.lock")
    assert "Not a directory" in _one_error(run, 2), describe(run)
