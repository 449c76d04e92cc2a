"""Filling a (small) file system for real, for the full-disk tests.

`FillDisk` is an action that fills the file system of params["directory"] once (the
file params["marker"], elsewhere, remembers it did) and returns True.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from bgtaskex import Action


def fill(directory: str | Path) -> Path:
    """Write zeros into `directory`/filler until the file system says ENOSPC; returns
    the filler (remove it to free the space)."""
    filler = Path(directory) / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return filler


class FillDisk(Action):
    def execute(self, deadline: float) -> bool:
        marker = Path(self.params["marker"])
        if not marker.exists():
            marker.touch()
            fill(self.params["directory"])
        return True
