"""What `run-once` and `daemon` check before they start, so that a deploy slip is one line
and exit code 2 even when nothing is due: a config no run can use, a `pythonpath`
directory that is not there, and declared modules that cannot be imported.

Standard library only, and no user code for `findable`: the idle `run-once` calls
`check_runnable` every minute under cron.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from ..config import Settings
from ..exceptions import ConfigError
from ..pythonpath import cwd_hint, import_hint, require, use
from .locks import lock_for

if TYPE_CHECKING:
    from ..registry import Registry  # the idle run-once imports no registry (nor models)

HOW_TO_DECLARE = "--import MODULE, the config's 'imports' or BGTASKEX_IMPORTS"
#: How to make a declared module that cannot be found findable.
ON_THE_PATH = (
    "put it on the Python path: install it into bgtaskex's venv, or add its directory to "
    "the config's pythonpath"
)


def findable(module: str) -> bool:
    """Whether `module` can be found on the Python path, without importing it or its
    parent packages (a submodule is looked up in its parent's search locations)."""
    if module in sys.modules:
        return True
    parts = module.split(".")
    try:
        spec = importlib.util.find_spec(parts[0])  # a top-level name: nothing is imported
        for depth in range(2, len(parts) + 1):
            if spec is None or spec.submodule_search_locations is None:
                return False
            name = ".".join(parts[:depth])
            parent = sys.modules.get(".".join(parts[: depth - 1]))
            where = getattr(parent, "__path__", None) or spec.submodule_search_locations
            spec = _find_in(name, list(where))
    except (ImportError, ValueError):
        return False
    except KeyError:  # a namespace package in one: no telling without importing them
        return True
    return spec is not None


def _find_in(name: str, path: list[str]) -> importlib.machinery.ModuleSpec | None:
    """The spec of submodule `name` in `path`, asking the import system's finders as
    `import` would, minus the import of the parent."""
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is not None:
            spec = find_spec(name, path)
            if spec is not None:
                return spec  # type: ignore[no-any-return]
    return None


def not_findable(modules: Iterable[str]) -> list[str]:
    return [m for m in modules if not findable(m)]


def check_runnable(settings: Settings) -> None:
    """ConfigError when no run could work with `settings`: a lock mode the database
    cannot give, a `pythonpath` directory that is not one, or a declared module
    (`imports`) that cannot be found once `pythonpath` is on `sys.path`. Cheap: nothing
    is imported."""
    lock = settings.concurrency.lock
    if not lock_for(lock).works_on_sqlite and _is_sqlite(settings.url):
        raise ConfigError(
            f'lock = "{lock}" needs PostgreSQL or MariaDB/MySQL: on SQLite the file lock '
            'keeps one runner (use lock = "file")'
        )
    require(settings.pythonpath)
    use(settings.pythonpath)
    missing = not_findable(settings.imports)
    if missing:
        raise ConfigError(
            f"declared module {missing[0]!r} (--import, 'imports' or BGTASKEX_IMPORTS) "
            "cannot be found on the Python path: fix its name, install it into bgtaskex's "
            "venv, or add its directory to the config's pythonpath" + cwd_hint(missing[0])
        )


def import_declared(settings: Settings) -> None:
    """Import every declared module (what a run would do anyway when it has work), with
    `pythonpath` on `sys.path`: ConfigError naming the first that fails."""
    use(settings.pythonpath)
    for module in settings.imports:
        try:
            importlib.import_module(module)
        except (Exception, SystemExit) as err:  # a broken module: one line, no traceback
            hint = import_hint(module, err)
            raise ConfigError(
                f"declared module {module!r} cannot be imported: {type(err).__name__}: {err}" + hint
            ) from err


def _is_sqlite(url: str) -> bool:
    return url.split(":", 1)[0].split("+", 1)[0].strip().lower() == "sqlite"


#: Why a module cannot be imported by a run ("not declared", "not found"), None if it can.
ModuleProblem = Callable[[str], str | None]


def module_problem(registry: Registry) -> ModuleProblem:
    """Why a run with this registry cannot import a module (cached per module); as
    `check` says it, and importing nothing."""
    cache: dict[str, str | None] = {}

    def problem(module: str) -> str | None:
        if module not in cache:
            reasons = [] if registry.allowed(module) else ["not declared"]
            reasons += [] if findable(module) else ["not found"]
            cache[module] = ", ".join(reasons) or None
        return cache[module]

    return problem
