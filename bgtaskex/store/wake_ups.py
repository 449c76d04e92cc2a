"""Wake-ups of the daemon: on PostgreSQL, LISTEN for the queues `Store.enqueue` names."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any

from sqlalchemy import Engine

from .statements import CHANNEL


def listen(engine: Engine, timeout: float) -> Iterator[str | None]:
    """See `Store.wake_ups`."""
    if engine.dialect.name != "postgresql":
        while True:
            time.sleep(timeout)
            yield None
    raw = engine.raw_connection()
    try:
        driver: Any = raw.driver_connection
        driver.autocommit = True
        channel = driver.execute(CHANNEL).fetchone()[0]
        driver.execute(f'LISTEN "{channel}"')
        while True:
            got = False
            for note in driver.notifies(timeout=timeout):
                got = True
                yield note.payload
            if not got:
                yield None
    finally:
        # Autocommit and LISTEN stay with the driver's connection: never back to the
        # pool, where a run would take it for one that has transactions.
        with suppress(Exception):
            raw.invalidate()
        raw.close()
