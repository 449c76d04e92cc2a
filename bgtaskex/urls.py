"""Database URLs without SQLAlchemy: the default location, masking, the SQLite file path.

Kept free of heavy imports: the idle fast path of `run-once` uses it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

# The lookbehind starts a scheme only at the start of a word: linear, not quadratic, on
# a long run of letters (an error quoting a huge bad value).
_SECRET = re.compile(
    r"(?P<head>(?<![\w+.-])[A-Za-z][\w+.-]*://[^:/@\s]*:)(?P<secret>[^@\s]+)(?P<tail>@)"
)
_SECRET_KV = re.compile(r"(?i)(?P<head>\bpassword\s*=\s*)(?P<secret>'[^']*'|\S+)")


def mask_secrets(text: str) -> str:
    """Replace passwords in URLs (and `password=...` DSN pairs) inside any text by ***."""
    text = _SECRET.sub(r"\g<head>***\g<tail>", text)
    return _SECRET_KV.sub(r"\g<head>***", text)


def default_data_dir() -> Path:
    """Where the default database lives: systemd's $STATE_DIRECTORY (a service with
    `StateDirectory=bgtaskex` gets /var/lib/bgtaskex), else the XDG data directory:
    $XDG_DATA_HOME/bgtaskex, ~/.local/share/bgtaskex."""
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        return Path(state.split(":")[0])
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return Path(base) / "bgtaskex"


def default_database_url() -> str:
    return f"sqlite:///{default_data_dir() / 'bgtaskex.db'}"


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///path` URL; None for other backends and in-memory SQLite."""
    match = re.match(r"^sqlite(?:\+pysqlite)?:///(?P<path>[^?]*)", url)
    if not match or match["path"] in ("", ":memory:"):
        return None
    return Path(unquote(match["path"]))
