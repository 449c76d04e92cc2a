"""Database URLs without SQLAlchemy: the default location, masking, the SQLite file path.

Kept free of heavy imports: the idle fast path of `run-once` uses it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import unquote

# Every regex starts a match only at the start of a word (the lookbehinds): linear, not
# quadratic, on a long run of letters (an error quoting a huge bad value).
#
# scheme://user:SECRET@host: the secret runs to the last "@" of the word, so a password
# written raw may hold @ : / ? # (SQLAlchemy takes it so); an encoded one is one word. The
# word is taken whole (possessive: no backtracking) and cut at its last "@" in Python.
_USERINFO = re.compile(r"(?P<head>(?<![\w+.-])[A-Za-z][\w+.-]*://[^:/@\s]*:)(?P<rest>\S*+)")
# The end of a bare secret: up to two closing marks (`:` `,` `)` a quote...) that end a
# word stay out of it, so that "URL: error" and "'URL'" read as they did. (A secret of
# ***, masked already, therefore stays as it is: masking twice changes nothing.)
_END = r"""(?=[:,;.)\]}'"]{0,2}(?:[&\s]|$))"""
# A URL's query: ?password=SECRET, &passwd=SECRET (any key ending in password, passwd or
# pwd), the secret running to the next "&" (SQLAlchemy splits the query there).
_QUERY = re.compile(
    r"(?i)(?P<head>[?&]\w*(?:password|passwd|pwd)=)(?P<secret>[^&\s]+?" + _END + ")"
)
# Elsewhere, KEY=SECRET (libpq's keyword DSN `password=...`, PGPASSWORD=, ODBC's PWD=,
# also encoded as %3D) and 'password': SECRET (a dict's repr, JSON). A quoted secret runs
# to its closing quote (backslash escapes included), a bare one to the next blank.
_KEY_VALUE = re.compile(
    r"""(?ix)
    (?P<head>
        (?<![\w?&])\w*(?:password|passwd|pwd)\s*(?:=|%3D)\s*
      | (?P<q>["'])\w*(?:password|passwd|pwd)(?P=q)\s*[:=]\s*
    )
    (?P<secret>'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"?|\S+?"""
    + _END.replace("&", "")
    + r""")
    """
)


def mask_secrets(text: str) -> str:
    """`text` with every password in it replaced by ***: in URLs (`user:pw@`,
    `?password=`, `&passwd=`), keyword DSNs (`password=...`, quoted or not) and
    key-value pairs (`'password': ...`). The one masking function of bgtaskex, applied
    wherever text leaves the process: output, errors, logs and stored history. It errs
    on the side of masking: text that merely looks like a password goes too."""
    lowered = text.lower()
    if "://" not in text and "pass" not in lowered and "pwd" not in lowered:
        return text  # no pattern can match (a run's history: most of what is masked)
    text = _USERINFO.sub(_masked_userinfo, text)
    text = _QUERY.sub(r"\g<head>***", text)
    return _KEY_VALUE.sub(_masked_value, text)


def _masked_userinfo(match: re.Match[str]) -> str:
    at = match["rest"].rfind("@")
    return match[0] if at < 0 else f"{match['head']}***{match['rest'][at:]}"


def _masked_value(match: re.Match[str]) -> str:
    quote = match["secret"][0] if match["secret"][0] in "'\"" else ""
    return f"{match['head']}{quote}***{quote}"


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
