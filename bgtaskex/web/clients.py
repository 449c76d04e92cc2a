"""The Client the dashboard's worker threads share.

Starlette runs the sync endpoints in a thread pool. One Client serves them all: its
Store opens each transaction on a connection of the engine's pool (thread-safe), and the
connection a thread binds (`Store.bound`) lives in a `threading.local`. Opened on the
first request, not at start, so that the server starts (and says so) while the
database is down; a database that cannot be opened is retried at the next request.

While the database has no bgtaskex schema, the client is the in-memory stand-in of an
empty queue (`Store.empty`), whose connection belongs to the thread that made it: that
one is made for each request, and dropped after it, until the schema exists.

An SQLite file deleted or replaced under the dashboard (restored from a backup, removed
by hand) would otherwise go on being read and written through the pooled connections
to the old file: pages showing what is gone, and a retry, cancel or pause written where
nobody will ever read it. So each request looks at the file first (one `stat`) and, when
it is no longer the one opened, drops the shared Client and opens the file there now
(none: an empty queue, as before the first enqueue).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from ..client import Client
from ..exceptions import InvalidState
from ..urls import sqlite_path

NO_SCHEMA = (
    "the database has no bgtaskex schema yet: nothing to act on (the first enqueue, "
    "run or 'bgtaskex db upgrade' creates it)"
)


class Clients:
    """Hands out the shared Client (`use`), opening it on first use."""

    def __init__(self, factory: Callable[[], Client]) -> None:
        self._factory = factory
        self._shared: Client | None = None
        self._file: tuple[int, int] | None = None  # the SQLite file the shared one opened
        self._lock = threading.Lock()

    @contextmanager
    def use(self, *, write: bool = False) -> Iterator[Client]:
        """The client for this request (raises the database's error when it cannot be
        opened: DatabaseUnavailable, SchemaOutdated, a UsageError for a bad URL).
        `write`: for an action, refused (InvalidState) while the database has no
        bgtaskex schema: there is nothing to act on, and looking creates nothing."""
        shared = self._shared
        if shared is not None and self._file == _identity(shared):
            yield shared
            return
        with self._lock:
            if self._shared is not None and self._file != _identity(self._shared):
                self._shared.close()  # the file was deleted or replaced: open the new one
                self._shared = None
            if self._shared is None:
                opened = self._factory()
                if not opened.store.no_schema:
                    self._shared = opened
                    self._file = _identity(opened)
                    shared = opened
            else:
                shared = self._shared
        if shared is not None:
            yield shared
            return
        try:  # no schema yet: this request's own stand-in
            if write:
                raise InvalidState(NO_SCHEMA)
            yield opened
        finally:
            opened.close()

    def close(self) -> None:
        with self._lock:
            if self._shared is not None:
                self._shared.close()
                self._shared = None


def _identity(client: Client) -> tuple[int, int] | None:
    """The device and inode of the client's SQLite file ((0, 0): not there; None for a
    server database)."""
    path = sqlite_path(client.settings.url)
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return (0, 0)
    return (found.st_dev, found.st_ino)
