"""Fixtures of the integration tests beyond tests/conftest.py's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bgtaskex.client import Client, connect
from bgtaskex.config import Settings


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[Client]:
    """A client on an SQLite file declaring `tests.scripted`: for what does not depend
    on the backend (`client` runs on each of them)."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'lite.db'}",
        lock_file=str(tmp_path / "run.lock"),
        imports=("tests.scripted", "tests.ops_actions"),
    )
    with connect(settings=settings) as client:
        yield client
