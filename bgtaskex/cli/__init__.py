"""The `bgtaskex` command: parse, call the `Client`, map exceptions to exit codes."""

from __future__ import annotations

from .main import _main, cli, main

__all__ = ["_main", "cli", "main"]
