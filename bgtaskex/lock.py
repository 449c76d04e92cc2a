"""The run lock: an OS-level file lock (portalocker), never blocking unless asked to wait."""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

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
                    holder = parse_holder(handle.read())
                    handle.close()
                    raise busy(self.path, holder) from None
                time.sleep(self.poll)
        handle.seek(0)
        handle.truncate()
        since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
        handle.write("\n")
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
    """Whether a live process holds the run lock at `path` right now.

    Looks with a shared lock taken and dropped at once, writing nothing: the holder
    named in the file stays, and two lookers do not get in each other's way.
    """
    import portalocker

    try:
        handle = open(path)  # noqa: SIM115 - closed below
    except OSError:
        return False
    try:
        portalocker.lock(handle, portalocker.LOCK_SH | portalocker.LOCK_NB)
    except portalocker.exceptions.LockException:
        return True
    else:
        portalocker.unlock(handle)
        return False
    finally:
        handle.close()


def raise_if_held(path: str | Path) -> None:
    """LockBusy when a live process holds the lock: a cheap look before a run loads
    anything heavy, so that overlapping cron runs give up at once. (The run still takes
    the lock for real; this only spares the loser its imports.)"""
    if lock_is_held(path):
        try:
            holder = parse_holder(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            holder = None
        raise busy(path, holder)


def busy(path: str | Path, holder: dict[str, Any] | None) -> LockBusy:
    """The error of a run that finds the lock held, naming the holder when known."""
    return LockBusy(
        f"another run{describe_holder(holder)} holds the lock {path}; nothing done", holder
    )


def parse_holder(text: str) -> dict[str, Any] | None:
    """The holder a lock file names (pid, host, since), None when it names nobody."""
    text = text.strip()
    if not text:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return {"pid": int(text)} if text.isdigit() else None
    return data if isinstance(data, dict) else None


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return ""
    parts = [f"pid {holder.get('pid')}"]
    if holder.get("host"):
        parts.append(f"on {holder['host']}")
    if holder.get("since"):
        parts.append(f"since {holder['since']}")
    return f" ({' '.join(parts)})"


def lock_state(path: str | Path) -> tuple[str, dict[str, Any] | None]:
    """("free" | "held" | "stale", holder): "stale" is a file naming a process that
    died without unlocking (kill -9): harmless, the kernel released its lock."""
    path = Path(path)
    try:
        holder = parse_holder(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError):
        return "free", None
    if lock_is_held(path):
        return "held", holder
    return ("stale", holder) if holder else ("free", None)
