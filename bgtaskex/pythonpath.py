"""The `pythonpath` setting: directories put on `sys.path` ahead of the installed
packages, so that the modules of an application that is not installed into bgtaskex's
venv can be declared (`imports`) under cron and systemd without a wrapper or
`PYTHONPATH`.

They go after the standard library, not at the very front as PYTHONPATH does: an
application's own `email/` package or `signal.py` would otherwise shadow the standard
library modules that bgtaskex (and the packages it uses) import later, and every run
would die of an internal error.

bgtaskex never adds the working directory itself (the console script does not see it,
as Python does not for any installed script); when a module is missing from the path but
lies in the working directory, `cwd_hint` says so. Standard library only: the idle
`run-once` calls this every minute.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

from .exceptions import ConfigError

#: The standard library's directory (lib-dynload lies below it).
_STDLIB = os.path.dirname(os.__file__)


def _standard(entry: str) -> bool:
    """Whether the `sys.path` entry is the standard library: its directory, one below it
    other than site-packages, or its zip (python311.zip, beside it)."""
    if not entry:
        return False
    path = os.path.abspath(entry)
    if path.endswith(".zip"):
        return os.path.dirname(path) == os.path.dirname(_STDLIB)
    inside = path == _STDLIB or path.startswith(_STDLIB + os.sep)
    return inside and not any(p in path for p in ("site-packages", "dist-packages"))


def use(directories: Sequence[str]) -> None:
    """Put `directories` on `sys.path` right after the standard library (before the
    installed packages), in their order, each once (an entry already on the path moves
    there). Idempotent."""
    wanted = list(dict.fromkeys(directories))
    if not wanted:
        return
    rest = [entry for entry in sys.path if entry not in wanted]
    at = max((i + 1 for i, entry in enumerate(rest) if _standard(entry)), default=0)
    placed = rest[:at] + wanted + rest[at:]
    if placed != sys.path:
        sys.path[:] = placed
        importlib.invalidate_caches()


def require(directories: Sequence[str]) -> None:
    """ConfigError naming the first of `directories` that is not a directory this user
    can read."""
    for directory in directories:
        unreadable = os.path.isdir(directory) and not os.access(directory, os.R_OK | os.X_OK)
        if not os.path.isdir(directory) or unreadable:
            what = "is not a directory" if os.path.exists(directory) else "does not exist"
            what = "cannot be read by this user" if unreadable else what
            raise ConfigError(
                f"pythonpath: {directory} {what} (the config's pythonpath, "
                "BGTASKEX_PYTHONPATH or --pythonpath)"
            )


def import_hint(module: str, err: BaseException) -> str:
    """`cwd_hint` when `err`, raised by importing `module`, says that `module` itself or
    one of its parent packages is missing (not a module it imports)."""
    name = err.name if isinstance(err, ModuleNotFoundError) else None
    if name and (module == name or module.startswith(name + ".")):
        return cwd_hint(module)
    return ""


def cwd_hint(module: str) -> str:
    """For a module that cannot be found: a sentence (starting with "; ") saying that it
    lies in the working directory, which is not on the Python path, and how to add it;
    "" when it does not lie there, or the working directory is on the path."""
    try:
        cwd = os.getcwd()
    except OSError:  # the working directory was removed
        return ""
    if any(os.path.abspath(entry or os.curdir) == cwd for entry in sys.path):
        return ""
    base = os.path.join(cwd, *module.split("."))
    found = next(
        (p for p in (base + ".py", os.path.join(base, "__init__.py")) if os.path.isfile(p)),
        None,
    )
    if found is None:
        return ""
    return (
        f"; {found} exists, but bgtaskex does not put the working directory on the "
        f'Python path: add --pythonpath . or pythonpath = ["{cwd}"] to the config'
    )
