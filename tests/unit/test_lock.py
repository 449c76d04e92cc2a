from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgtaskex.exceptions import LockBusy
from bgtaskex.lock import RunLock, lock_state

HOLD = """
import sys, time
from bgtaskex.lock import RunLock, lock_state
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
