from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgtaskex.exceptions import LockBusy
from bgtaskex.lock import RunLock

HOLD = """
import sys, time
from bgtaskex.lock import RunLock
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
        assert path.read_text().strip() == str(os.getpid())


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
    with RunLock(path, wait=5):
        pass
