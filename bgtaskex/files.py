"""Files bgtaskex creates, private whatever the umask: directories 0700, files 0600.

Only what bgtaskex creates itself gets these modes; a directory or file that exists
already is left as the operator made it. Light imports only (the idle fast path of
`run-once` uses it).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from .exceptions import BgtaskexError, ConfigError, StorageError

DIR_MODE = 0o700
FILE_MODE = 0o600

#: errno values that say the path itself cannot serve (under a file, a directory where a
#: file should be, no permission, no such place): the setting is wrong, a usage error
#: (exit 2). Any other OSError is the storage failing (a full disk, EIO, a read-only file
#: system): exit 4, as for the database.
PATH_ERRNOS = frozenset(
    {
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.ELOOP,
        errno.EINVAL,
    }
)


def file_error(what: str, err: OSError) -> BgtaskexError:
    """`err` on `what` (a lock file, a directory), as bgtaskex's error: ConfigError when
    the path cannot serve, StorageError when the storage fails."""
    kind = ConfigError if err.errno in PATH_ERRNOS else StorageError
    return kind(f"{what}: {err.strerror or err}")


def private_dir(path: str | Path) -> None:
    """Create the directory `path` and its missing parents, each 0700; existing ones are
    left as they are. The mode is set after creation, so the umask cannot widen (or
    narrow) it."""
    path = Path(path)
    if path.is_dir():
        return
    missing = []
    for parent in (path, *path.parents):
        if parent.is_dir():
            break
        missing.append(parent)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            continue  # another process made it first: theirs, keep its mode
        os.chmod(directory, DIR_MODE)


def create_private_file(path: str | Path) -> bool:
    """Create `path` empty with mode 0600 when it does not exist yet; True when created.

    Never follows a symbolic link and never opens an existing file. An empty file is a
    valid (empty) SQLite database: the driver then opens it instead of creating it with
    its own, umask-bound mode.
    """
    try:
        fd = os.open(
            path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE
        )
    except OSError as err:
        if err.errno == errno.EEXIST:
            return False
        raise
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return True
