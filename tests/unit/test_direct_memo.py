"""The instant memo of `store/direct.py` under threads: a run's workers share it."""

from __future__ import annotations

import sys
import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy.dialects import sqlite

from bgtaskex.store import statements as sql
from bgtaskex.store.direct import preparable


def test_threads_never_get_each_others_instant() -> None:
    prepared = preparable(sql.insert_events(1), sqlite.dialect())
    assert prepared is not None
    (place, convert), *_ = prepared.processors
    assert prepared.names[place] == "v_at_0"
    wrong: list[tuple[datetime, str]] = []

    def convert_own(offset: int) -> None:
        instants = [
            datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=offset, seconds=i) for i in range(50)
        ]
        expected = {
            id(i): i.replace(tzinfo=None).isoformat(" ", timespec="microseconds") for i in instants
        }
        for _ in range(400):
            for instant in instants:
                got = convert(instant)
                if got != expected[id(instant)]:
                    wrong.append((instant, got))

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=convert_own, args=(n * 1000,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    assert wrong == []
