"""The storage layer: every query bgtaskex sends to its own database lives in this
package. (The retention rules' statements on an *application's* tables are the
`PurgeRows` action's, in `bgtaskex/builtin/purge.py`.)

`Store` (loaded on first use, so that `store.probe` stays free of SQLAlchemy for the
idle `run-once`) is the one object the layers above talk to; `RunStorage` is what the
run needs of it (`contract`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .contract import RunStorage
    from .core import Store

__all__ = ["RunStorage", "Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from .core import Store

        return Store
    if name == "RunStorage":
        from .contract import RunStorage

        return RunStorage
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
