from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgtaskex.exceptions import ConfigError, LockBusy
from bgtaskex.run.file_lock import RunLock, lock_is_held, lock_state, raise_if_held

HOLD = """
import sys, time
from bgtaskex.run.file_lock import RunLock, lock_state
with RunLock(sys.argv[1]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_second_holder_is_refused_with_the_pid(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match=f"pid {holder.pid}"):
            RunLock(path).acquire()
        began = time.monotonic()
        with pytest.raises(LockBusy):
            RunLock(path, wait=0.3).acquire()
        assert time.monotonic() - began >= 0.3
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=10)
    with RunLock(path):  # released when the holder exited
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid()
        assert holder["host"] == socket.gethostname()
        assert holder["since"].endswith("Z")
        assert lock_state(path)[0] == "held"  # by ourselves, through another descriptor
    assert path.read_text() == ""  # released: the file names nobody
    assert lock_state(path) == ("free", None)


def test_lock_dies_with_its_process(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait(timeout=10)
    state, named = lock_state(path)
    assert state == "stale" and named is not None and named["pid"] == holder.pid
    with RunLock(path, wait=5):
        pass


# -- a lock file that is not ours --------------------------------------------------------

PRECIOUS = "root's data, not a lock\n"


def _plant(kind: str, path: Path, victim: Path) -> None:
    if kind == "symlink":
        path.symlink_to(victim)
    elif kind == "dangling symlink":
        path.symlink_to(victim.with_name("created-through-the-link"))
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "hard link":
        os.link(victim, path)
    else:  # "other owner"
        if os.geteuid() != 0:
            pytest.skip("giving a file to another user needs root")
        path.write_text(PRECIOUS)
        os.chown(path, 4242, 4242)


def _state(*paths: Path) -> list[tuple[int, int, int, bytes | None]]:
    """What a refusal must leave as it was: type, mode, owner and content of each path."""
    found = []
    for path in paths:
        info = os.lstat(path)
        content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
        found.append((info.st_mode, info.st_uid, info.st_nlink, content))
    return found


REASONS = {
    "symlink": "is a symbolic link",
    "dangling symlink": "is a symbolic link",
    "fifo": "is not a regular file",
    "directory": "is a directory",
    "hard link": "is a file with 2 hard links",
    "other owner": "is owned by uid 4242",
}


@pytest.mark.timeout(30)  # a FIFO opened without O_NONBLOCK would hang here
@pytest.mark.parametrize("kind", list(REASONS))
def test_a_lock_file_that_is_not_ours_is_refused_and_left_untouched(
    tmp_path: Path, kind: str
) -> None:
    """Another user plants run.lock (a symlink to a root-owned file, a FIFO, a hard link,
    a file of their own): the run refuses it with a ConfigError (exit 2) naming why,
    and neither the file nor what it points to changes: no truncation, no holder line,
    no chmod, nothing created through a dangling link."""
    path, victim = tmp_path / "run.lock", tmp_path / "victim"
    victim.write_text(PRECIOUS)
    os.chmod(victim, 0o644)
    _plant(kind, path, victim)
    before = _state(path, victim)

    with pytest.raises(ConfigError, match=REASONS[kind]) as refused:
        RunLock(path).acquire()
    assert "left untouched" in str(refused.value) and "\n" not in str(refused.value)
    if kind in ("symlink", "dangling symlink", "fifo", "directory"):
        # Looking is refused too: no read through a link, no open of a FIFO.
        for look in (lock_state, lock_is_held, raise_if_held):
            with pytest.raises(ConfigError, match=REASONS[kind]):
                look(path)
    else:  # someone else's regular file: a look (which writes nothing) may read it
        assert lock_state(path) == ("free", None)
    assert _state(path, victim) == before
    assert victim.read_text() == PRECIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lock", "victim"]


def test_our_lock_file_of_an_earlier_release_is_tightened_to_0600(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    path.write_text('{"pid": 1}\n')
    os.chmod(path, 0o644)
    with RunLock(path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert json.loads(path.read_text())["pid"] == os.getpid()
