"""The torture suite: tests that try to make bgtaskex lose work.

They drive the real `bgtaskex run-once` in subprocesses (an isolated environment, as in
tests/acceptance), kill it with a real SIGKILL at random instants, start many of them at
once against one database, and feed it actions that raise or kill their own process; then
they check the database and an append-only journal written by the actions
(`tests.support.journal.JournalAction`) with `invariants.check`.

Size. Every test runs in one of two sizes:

* ``quick`` (the default, what CI runs): bounded so that the whole directory stays within
  a few minutes on 2 cores;
* ``long``, for runs by hand: ``BGTASKEX_TORTURE=long python -m pytest tests/reliability -s``
  (10x the kills and processes; expect tens of minutes).

The size comes from the environment variable ``BGTASKEX_TORTURE`` (``quick`` or ``long``;
anything else stops the session with a usage error, see conftest.py), read once here so
that module-level marks (timeouts) can use it too. Tests take it from the ``size`` fixture,
or use ``SIZE`` / ``LONG`` / ``scaled(quick, long)`` below. The CLI subprocesses never see
the variable: their environment drops every ``BGTASKEX_*`` variable.

``-s`` shows what each test prints: the invariant it checks and its counts (the counts are
also in the assertion messages).
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

#: The environment variable that selects the size.
SIZE_VARIABLE = "BGTASKEX_TORTURE"
SIZES = ("quick", "long")
#: "quick" or "long" (an invalid value is reported by conftest.py).
SIZE = (os.environ.get(SIZE_VARIABLE) or "quick").strip().lower()
LONG = SIZE == "long"


def scaled(quick: T, long: T) -> T:
    """`quick` or `long`, by the size of this session."""
    return long if LONG else quick
