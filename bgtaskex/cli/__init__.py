"""The `bgtaskex` command: parse, call the `Client`, map exceptions to exit codes.

`main` takes `run-once` without click when it can (cli/fast.py); click (cli/main.py, the
group and its commands) is imported for everything else, and by `cli` and `_main`.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main import _main, cli

__all__ = ["_main", "cli", "main"]


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every error is one line on stderr and a documented exit code."""
    from .fast import run_once

    code = run_once(sys.argv[1:] if argv is None else argv)
    if code is None:
        code = _group()._main(argv)
    sys.exit(code)


def _group() -> ModuleType:
    """cli/main.py, imported; this package's `main` stays the function above (importing
    the submodule sets the package's attribute of that name to the module)."""
    import importlib

    module = importlib.import_module(".main", __name__)
    globals()["main"] = _entry
    return module


_entry = main


def __getattr__(name: str) -> Any:
    """`cli` and `_main`, from cli/main.py when first asked for (importing click)."""
    if name in ("_main", "cli"):
        return getattr(_group(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
