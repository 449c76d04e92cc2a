from __future__ import annotations

from pathlib import Path

import pytest

from bgtaskex.models import STATUS_ORDER, TaskStatus, TaskType, run_order
from bgtaskex.urls import mask_secrets, sqlite_path


@pytest.mark.parametrize(
    "text",
    [
        "postgresql+psycopg://user:s3cret@db.example:5432/app",
        "could not connect: mysql://root:s3cret@10.0.0.1/x failed",
        "host=db user=u password=s3cret dbname=x",
    ],
)
def test_mask_secrets(text: str) -> None:
    masked = mask_secrets(text)
    assert "s3cret" not in masked
    assert "***" in masked


def test_mask_keeps_urls_without_password() -> None:
    assert mask_secrets("sqlite:////var/lib/x.db") == "sqlite:////var/lib/x.db"
    assert mask_secrets("postgresql://user@host/db") == "postgresql://user@host/db"


def test_sqlite_path() -> None:
    assert sqlite_path("sqlite:////var/lib/b.db") == Path("/var/lib/b.db")
    assert sqlite_path("sqlite:///rel.db") == Path("rel.db")
    assert sqlite_path("sqlite://") is None
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://h/db") is None


def test_run_order_is_type_then_status() -> None:
    order = [
        (TaskType.INTERACTIVE, TaskStatus.STARTING),
        (TaskType.INTERACTIVE, TaskStatus.RECOVERING),
        (TaskType.INTERACTIVE, TaskStatus.RUNNING),
        (TaskType.INTERACTIVE, TaskStatus.PAUSED),
        (TaskType.INTERACTIVE, TaskStatus.CREATED),
        (TaskType.CRON, TaskStatus.STARTING),
        (TaskType.CRON, TaskStatus.CREATED),
    ]
    keys = [run_order(t, s) for t, s in order]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert run_order(TaskType.CRON, TaskStatus.FINISHED) is None
    assert run_order(TaskType.INTERACTIVE, TaskStatus.FAILED) is None
    assert set(STATUS_ORDER) == {s for s in TaskStatus if not s.terminal}
