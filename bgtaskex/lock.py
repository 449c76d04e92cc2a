"""The run lock: an OS-level file lock (portalocker), never blocking unless asked to wait."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import TracebackType
from typing import IO

from .exceptions import ConfigError, LockBusy


class RunLock:
    """An exclusive lock on a file, held for the duration of a run.

    The lock is the kernel's (flock / LockFileEx): it goes away with the process, so a
    run killed with SIGKILL never leaves a stale lock behind. The holder's pid is written
    into the file, only to tell the user who holds it.
    """

    def __init__(self, path: str | Path, wait: float = 0.0, poll: float = 0.05) -> None:
        self.path = Path(path)
        self.wait = max(0.0, wait)
        self.poll = poll
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        import portalocker

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            handle = open(self.path, "a+")  # noqa: SIM115 - held until release()
        except OSError as err:
            raise ConfigError(f"lock file {self.path}: {err.strerror or err}") from None
        give_up = time.monotonic() + self.wait
        while True:
            try:
                portalocker.lock(handle, portalocker.LOCK_EX | portalocker.LOCK_NB)
                break
            except portalocker.exceptions.LockException:
                if time.monotonic() >= give_up:
                    handle.seek(0)
                    holder = handle.read().strip()
                    handle.close()
                    who = f" (pid {holder})" if holder.isdigit() else ""
                    raise LockBusy(
                        f"another run{who} holds the lock {self.path}; nothing done"
                    ) from None
                time.sleep(self.poll)
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            import portalocker

            try:
                self._file.seek(0)
                self._file.truncate()
                portalocker.unlock(self._file)
            finally:
                self._file.close()
                self._file = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def lock_is_held(path: str | Path) -> bool:
    """Whether a live process holds the run lock at `path` right now."""
    if not Path(path).exists():
        return False
    probe = RunLock(path)
    try:
        probe.acquire()
    except LockBusy:
        return True
    probe.release()
    return False
