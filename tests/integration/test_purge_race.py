"""`purge` next to a concurrent `retry` (#15 attack): the batch purge selects is
locked as it is selected (`FOR UPDATE SKIP LOCKED`), so a task that a retry turns back
into `created` meanwhile is never deleted. PostgreSQL and MariaDB (SQLite serialises its
writers)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import sqlalchemy

from bgtaskex.models import NewAction, TaskFilter, TaskType
from bgtaskex.store import Store

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(
    params=[
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def server_url(request: pytest.FixtureRequest) -> str:
    name = "pg_schema_url" if request.param == "postgres" else "mariadb_database_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
def store(server_url: str) -> Iterator[Store]:
    opened = Store(server_url)
    opened.ensure_schema()
    yield opened
    opened.close()


def test_purge_does_not_delete_a_task_a_concurrent_retry_puts_back(
    store: Store, server_url: str
) -> None:
    task_id = store.enqueue("victim", TaskType.CRON, "default", [NewAction("x.y:Z")])
    assert store.admin.cancel(task_id, executing=lambda: False)  # ended: purgeable
    other = sqlalchemy.create_engine(server_url)
    try:
        with other.connect() as conn:
            tx = conn.begin()  # a retry under way: the task is `created` again, not yet committed
            conn.execute(
                sqlalchemy.text(
                    "UPDATE bgtaskex_tasks SET status = 'created', ended_at = NULL WHERE id = :id"
                ),
                {"id": task_id},
            )
            purged: list[int] = []
            purge = threading.Thread(
                target=lambda: purged.append(
                    store.admin.purge(TaskFilter(statuses=frozenset({"cancelled"})))
                )
            )
            purge.start()
            purge.join(timeout=3)  # with the row locked by the retry: done at once
            tx.commit()
            purge.join()
    finally:
        other.dispose()
    assert purged == [0]
    assert store.get_task(task_id).status == "created"  # the retried task is still there
