"""MariaDB ends a session idle in a transaction (`idle_transaction_timeout`, 10.3+);
MySQL has no such limit, which bgtaskex says once instead of failing (on a live server:
tests/integration/test_claims.py)."""

from __future__ import annotations

import logging

import pytest

from bgtaskex.store import engine


def test_mariadb_gets_its_set_rounded_to_a_whole_second() -> None:
    statement = engine.mysql_idle_timeout("10.11.19-MariaDB-0+deb12u1", 1.4)
    assert statement == "SET SESSION idle_transaction_timeout = 1"
    assert engine.mysql_idle_timeout("5.5.5-10.6.4-MariaDB", 0.2) == (
        "SET SESSION idle_transaction_timeout = 1"
    )


def test_mysql_gets_no_set_and_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine, "_warned_mysql_idle", False)
    caplog.set_level(logging.WARNING, logger="bgtaskex")
    assert engine.mysql_idle_timeout("8.0.36", 30) is None
    assert engine.mysql_idle_timeout("8.0.36-0ubuntu0.22.04.1", 30) is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "frozen worker" in warnings[0], warnings
