"""The storage layer: every query bgtaskex sends to its database lives in this package.

`Store` (loaded on first use, so that `store.probe` stays free of SQLAlchemy for the
idle `run-once`) is the one object the layers above talk to.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .core import Store

__all__ = ["Store"]


def __getattr__(name: str) -> Any:
    if name == "Store":
        from .core import Store

        return Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
