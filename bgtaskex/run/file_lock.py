"""The run lock: an OS-level file lock (flock(2)), never blocking unless asked to wait.

The lock file is bgtaskex's own: opened without following a symbolic link, created 0600
whatever the umask, and written (truncated to name the holder) only when it is *ours*:
a regular file, owned by this process's effective user, with no other hard link. Any
other file (a symlink planted by another user, a FIFO, a directory, someone else's or a
hard-linked file) is refused with a ConfigError (exit 2) and left untouched. A path that
cannot serve (under a file, no permission) is a ConfigError too; the storage failing (a
full disk, a read-only file system) is a StorageError (exit 4).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..exceptions import BgtaskexError, ConfigError, LockBusy, StorageError
from ..files import FILE_MODE, file_error, private_dir

_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK  # a planted FIFO must not hang us


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
        try:
            private_dir(self.path.parent)
        except OSError as err:
            raise io_error(self.path.parent, err) from None
        handle = open_lock_file(self.path, write=True)
        give_up = time.monotonic() + self.wait
        while True:
            try:
                if _flock(handle, shared=False):
                    break
            except OSError as err:  # ENOLCK on NFS, ...
                handle.close()
                raise StorageError(f"lock file {self.path}: cannot lock it: {err}") from None
            if time.monotonic() >= give_up:
                holder = parse_holder(_read(handle))
                handle.close()
                raise busy(self.path, holder) from None
            time.sleep(self.poll)
        since = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        import json  # here: the idle run-once looks at the lock but never takes it
        import socket

        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": since}
        try:
            # Straight to the file, unbuffered: a write that failed (a full disk) is not
            # tried again when the file is closed.
            data = (json.dumps(holder) + "\n").encode()
            os.ftruncate(handle.fileno(), 0)
            if os.pwrite(handle.fileno(), data, 0) != len(data):  # the disk filled up
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as err:  # no run without a lock file that names its holder
            handle.close()  # and with it the lock
            raise io_error(self.path, err) from None
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            try:
                # Naming nobody is a courtesy: a file naming a dead holder is harmless
                # ("stale"), so a failed write must not hide the run's own outcome.
                with contextlib.suppress(OSError):
                    os.ftruncate(self._file.fileno(), 0)
                _unlock(self._file)
            finally:
                with contextlib.suppress(OSError):
                    self._file.close()
                self._file = None

    def still_held(self) -> bool:
        """Whether the lock this run holds still guards the path: False once someone
        removed or replaced the file (a tmp cleaner, an operator), which lets another
        run lock a new file there."""
        handle = self._file
        if handle is None:
            return False
        try:
            ours, there = os.fstat(handle.fileno()), os.stat(self.path, follow_symlinks=False)
        except OSError:
            return False
        return (ours.st_dev, ours.st_ino) == (there.st_dev, there.st_ino)

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


def open_lock_file(path: str | Path, *, write: bool) -> IO[str]:
    """The lock file at `path`, opened without following a symbolic link.

    `write=True` (a run about to take the lock) creates it 0600 when absent and refuses a
    file that is not ours; `write=False` (a look, which writes nothing) refuses only what
    is not a regular file, so root may look at the lock of a service user's run. Raises
    FileNotFoundError when `write=False` and there is no file.
    """
    flags = _FLAGS | (os.O_RDWR | os.O_CREAT if write else os.O_RDONLY)
    try:
        fd = os.open(path, flags, FILE_MODE)
    except OSError as err:
        if err.errno == errno.ENOENT and not write:
            raise
        if err.errno in (errno.ELOOP, errno.EMLINK) and os.path.islink(path):
            raise not_ours(path, "a symbolic link") from None
        if err.errno == errno.EISDIR:
            raise not_ours(path, "a directory") from None
        raise io_error(path, err) from None
    try:
        info = os.fstat(fd)
        reason = _foreign(info, owner_too=write)
        if reason:
            raise not_ours(path, reason)
        os.set_blocking(fd, True)
        if write and stat.S_IMODE(info.st_mode) != FILE_MODE:
            os.fchmod(fd, FILE_MODE)  # new (the umask) or an older release's 0644
        return os.fdopen(fd, "r+" if write else "r", encoding="utf-8")
    except BaseException as err:
        os.close(fd)
        if isinstance(err, OSError):
            raise io_error(path, err) from None
        raise


def _foreign(info: os.stat_result, *, owner_too: bool) -> str | None:
    """Why a lock file is not ours, None when it is."""
    if stat.S_ISDIR(info.st_mode):
        return "a directory"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not owner_too:
        return None
    if info.st_uid != os.geteuid():
        return f"owned by uid {info.st_uid}, not by this user (uid {os.geteuid()})"
    if info.st_nlink > 1:
        return f"a file with {info.st_nlink} hard links"
    return None


def not_ours(path: str | Path, reason: str) -> ConfigError:
    """The error for a lock file bgtaskex will not touch."""
    return ConfigError(
        f"lock file {path} is {reason}: not bgtaskex's, left untouched "
        "(remove it, or choose another with --lock-file)"
    )


def io_error(path: str | Path, err: OSError) -> BgtaskexError:
    """An OSError on the lock file (or its directory): a path that cannot serve is a
    ConfigError (exit 2), the storage failing (a full disk) a StorageError (exit 4)."""
    return file_error(f"lock file {path}", err)


def _read(handle: IO[str]) -> str:
    try:
        handle.seek(0)
        return handle.read(4096)
    except (OSError, UnicodeDecodeError):
        return ""


def _look(path: str | Path) -> tuple[bool, str]:
    """(held, text) of the lock file at `path`; (False, "") when there is none.

    Looks with a shared lock taken and dropped at once, writing nothing: the holder
    named in the file stays, and two lookers do not get in each other's way.
    """
    try:
        handle = open_lock_file(path, write=False)
    except FileNotFoundError:
        return False, ""
    with handle:
        text = _read(handle)
        try:
            if not _flock(handle, shared=True):
                return True, text
        except OSError as err:
            raise StorageError(f"lock file {path}: cannot lock it: {err}") from None
        _unlock(handle)
        return False, text


def _flock(handle: IO[str], *, shared: bool) -> bool:
    """Lock `handle` with flock(2), without waiting (what portalocker does on POSIX,
    without its import, which cost every start-up about 7 ms); False when another open
    file holds it. Other errors (ENOLCK on NFS) are raised."""
    import fcntl

    try:
        fcntl.flock(handle.fileno(), (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:  # EWOULDBLOCK: held
        return False
    return True


def _unlock(handle: IO[str]) -> None:
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def lock_is_held(path: str | Path) -> bool:
    """Whether a live process holds the run lock at `path` right now (False when there
    is no lock file; ConfigError when it is a symlink or not a regular file)."""
    return _look(path)[0]


def raise_if_held(path: str | Path) -> None:
    """LockBusy when a live process holds the lock: a cheap look before a run loads
    anything heavy, so that overlapping cron runs give up at once. (The run still takes
    the lock for real; this only spares the loser its imports.)"""
    held, text = _look(path)
    if held:
        raise busy(path, parse_holder(text))


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
        import json

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
    held, text = _look(path)
    holder = parse_holder(text)
    if held:
        return "held", holder
    return ("stale", holder) if holder else ("free", None)
