"""Deadlock victims are told apart from other database errors, so a write that lost a
deadlock (nothing written) can be tried again. Real deadlocks, forced into the store's
writes on PostgreSQL and MariaDB: tests/integration/test_deadlocks.py."""

from __future__ import annotations

import pytest
from sqlalchemy import exc as sa_exc

from bgtaskex.exceptions import DatabaseUnavailable, Deadlock, StorageError
from bgtaskex.store.engine import translated


class MySQLError(Exception):
    pass


class PostgresError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("deadlock detected")
        self.sqlstate = sqlstate


def raised(orig: Exception) -> type[Exception]:
    with pytest.raises(StorageError) as caught, translated():
        raise sa_exc.OperationalError("UPDATE ...", {}, orig)
    return type(caught.value)


@pytest.mark.parametrize(
    ("orig", "expected"),
    [
        (MySQLError(1213, "Deadlock found when trying to get lock"), Deadlock),
        (MySQLError(1205, "Lock wait timeout exceeded"), Deadlock),
        (PostgresError("40P01"), Deadlock),
        (MySQLError(1062, "Duplicate entry"), StorageError),
        (PostgresError("23505"), StorageError),
        (Exception(), StorageError),
    ],
)
def test_deadlocks_are_told_apart(orig: Exception, expected: type[Exception]) -> None:
    assert raised(orig) is expected


def test_a_lost_connection_is_unavailable_not_a_deadlock() -> None:
    with pytest.raises(DatabaseUnavailable), translated(unavailable=True):
        raise sa_exc.OperationalError("SELECT 1", {}, MySQLError(1213, "x"))
