"""The web dashboard's data, on SQLite, PostgreSQL and MariaDB: pages of tasks
(`Client.page_tasks`: order, `next_before`, every filter, the count's lower bound),
actions per hour (`Client.activity`), and the bulk cancel and retry (`cancel_where`,
`retry_where`: the single commands' rules, the `expect` guard, a cancel request for a
task being executed, nothing outside the filter touched)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from bgtaskex import tables as t
from bgtaskex.client import Client
from bgtaskex.exceptions import InvalidState, UsageError
from bgtaskex.models import TaskFilter, TaskPage, run_order
from bgtaskex.owner import holder_name
from bgtaskex.store import pages
from bgtaskex.views import activity_dict, bulk_dict, task_page_dict

NOOP = "tests.scripted:Noop"
QUEUES = ("default", "reports", "emails")
NAMES = ("Nightly-report", "sync", "nightly_x", "mail")
STATUSES = ("created", "paused", "running", "finished", "failed", "cancelled")
BASE = datetime(2026, 3, 1, tzinfo=UTC)


def _set(client: Client, task_id: int, **values: Any) -> None:
    with client.store._engine.begin() as conn:
        conn.execute(update(t.tasks).where(t.tasks.c.id == task_id).values(**values))


def _status(client: Client, task_id: int, status: str, type_: str = "cron") -> None:
    ended = status in ("finished", "failed", "cancelled")
    _set(
        client,
        task_id,
        status=status,
        run_order=run_order(type_, status),
        ended_at=BASE if ended else None,
    )


@pytest.fixture
def tasks(client: Client) -> list[dict[str, Any]]:
    """36 tasks of every queue, type, name and status, created an hour apart (not in id
    order for a few: created_at does not follow ids); what each is, by id."""
    made = []
    for i in range(36):
        type_ = "interactive" if i % 5 == 0 else "cron"
        queue, name = QUEUES[i % 3], f"{NAMES[i % 4]}-{i}"
        task_id = client.enqueue(name, [NOOP], type=type_, queue=queue)
        status = STATUSES[i % 6]
        created = BASE + timedelta(hours=i if i % 7 else 40 - i)
        _status(client, task_id, status, type_)
        _set(client, task_id, created_at=created)
        made.append(
            {"id": task_id, "type": type_, "queue": queue, "name": name, "status": status}
            | {"created_at": created}
        )
    return made


def _selects(task: dict[str, Any], where: TaskFilter) -> bool:
    return (
        (where.statuses is None or task["status"] in where.statuses)
        and (not where.types or task["type"] in where.types)
        and (not where.queues or task["queue"] in where.queues)
        and (
            not where.name_glob
            or fnmatch.fnmatchcase(task["name"].lower(), where.name_glob.lower())
        )
        and (where.since is None or task["created_at"] >= where.since)
        and (where.until is None or task["created_at"] < where.until)
    )


def _walk(client: Client, where: TaskFilter, limit: int) -> Iterator[TaskPage]:
    before = None
    while True:
        page = client.page_tasks(where, before_id=before, limit=limit)
        yield page
        if page.next_before is None:
            return
        before = page.next_before


FILTERS = {
    "none": TaskFilter(),
    "failed": TaskFilter(statuses=frozenset({"failed"})),
    "active": TaskFilter(statuses=frozenset({"created", "paused", "running"})),
    "interactive": TaskFilter(types=frozenset({"interactive"})),
    "queue": TaskFilter(queues=frozenset({"reports"})),
    "queues+status": TaskFilter(
        queues=frozenset({"reports", "emails"}), statuses=frozenset({"failed", "created"})
    ),
    "name": TaskFilter(name_glob="nightly*"),  # any case; _ is no wildcard
    "name leading *": TaskFilter(name_glob="*-1?"),
    "since": TaskFilter(since=BASE + timedelta(hours=20)),
    "until": TaskFilter(until=BASE + timedelta(hours=9)),
    "since+until+type": TaskFilter(
        since=BASE + timedelta(hours=5),
        until=BASE + timedelta(hours=30),
        types=frozenset({"cron"}),
    ),
    "nothing": TaskFilter(statuses=frozenset()),
}


@pytest.mark.parametrize("small_range", [5000, 2], ids=["time-index", "id-order"])
@pytest.mark.parametrize("name", list(FILTERS))
def test_pages_walk_every_selected_task_newest_first(
    client: Client,
    tasks: list[dict[str, Any]],
    name: str,
    small_range: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Walking the pages by next_before yields exactly the tasks the filter selects, by
    id descending, in pages of `limit`, whichever index reads them."""
    monkeypatch.setattr(pages, "SMALL_TIME_RANGE", small_range)
    where = FILTERS[name]
    expected = sorted((t["id"] for t in tasks if _selects(t, where)), reverse=True)
    walked = list(_walk(client, where, limit=4))
    seen = [task.id for page in walked for task in page.tasks]
    assert seen == expected
    assert all(len(page.tasks) == 4 for page in walked[:-1])
    assert len(walked[-1].tasks) <= 4 and walked[-1].next_before is None
    for page in walked:
        assert page.total == len(expected) and page.total_is_lower_bound is False
    if expected:
        assert walked[0].tasks[0].actions[0].ref == NOOP  # with their actions


@pytest.mark.parametrize("name", list(FILTERS))
def test_a_filter_checked_task_by_task_searches_a_budget_per_page(
    client: Client, tasks: list[dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a name glob or a time range read in id order, a page reads at most
    SCAN_BUDGET tasks of its ranges: it may hold fewer than `limit` (its next_before,
    `searched_to`, goes on below them), and the count is of the matches among the
    first SCAN_BUDGET, a lower bound; walking still yields exactly the selected tasks."""
    monkeypatch.setattr(pages, "SCAN_BUDGET", 5)
    monkeypatch.setattr(pages, "SMALL_TIME_RANGE", 2)  # time ranges read in id order
    where = FILTERS[name]
    expected = sorted((t["id"] for t in tasks if _selects(t, where)), reverse=True)
    walked = list(_walk(client, where, limit=4))
    assert [task.id for page in walked for task in page.tasks] == expected
    checked = bool(where.name_glob or where.since or where.until)
    for page in walked:
        assert len(page.tasks) <= 4
        if page.searched_to is not None:
            assert checked and page.next_before == page.searched_to
            assert all(task.id >= page.searched_to for task in page.tasks)
        assert page.total <= len(expected)
        assert page.total_is_lower_bound is (page.count_searched is not None)
        if page.count_searched is None:
            assert page.total == len(expected)
    if where.name_glob:  # a glob is always checked task by task
        assert walked[0].count_searched == 5 and walked[0].total_is_lower_bound
        assert any(page.searched_to is not None for page in walked)
    if name in ("since", "until"):  # a time range alone is counted from its index
        assert all(p.count_searched is None and p.total == len(expected) for p in walked)
    if not checked:  # the indexes serve the filter: exact counts, full pages
        assert all(p.searched_to is None and p.count_searched is None for p in walked)


def test_queue_names_are_the_queues_with_tasks_or_a_pause(
    client: Client, tasks: list[dict[str, Any]]
) -> None:
    client.pause("quiet", "no task in it")
    assert client.queue_names() == sorted({*QUEUES, "quiet"})
    assert client.queue_names() == sorted(q.queue for q in client.queues())


def test_the_count_stops_at_count_up_to(client: Client, tasks: list[dict[str, Any]]) -> None:
    page = client.page_tasks(count_up_to=10, limit=3)
    assert (page.total, page.total_is_lower_bound) == (10, True)
    exact = client.page_tasks(count_up_to=len(tasks))
    assert (exact.total, exact.total_is_lower_bound) == (len(tasks), False)
    assert [t.id for t in page.tasks] == sorted((t["id"] for t in tasks), reverse=True)[:3]
    assert page.next_before == page.tasks[-1].id


def test_a_status_this_release_does_not_know_is_paged(
    client: Client, tasks: list[dict[str, Any]]
) -> None:
    """Filters on type or queue only read one range per status present in the table
    (a loose index scan), not per status this release knows."""
    strange = tasks[1]
    _set(client, strange["id"], status="zombie")
    for where in (
        TaskFilter(types=frozenset({strange["type"]})),
        TaskFilter(queues=frozenset({strange["queue"]})),
    ):
        ids = [task.id for page in _walk(client, where, limit=50) for task in page.tasks]
        assert strange["id"] in ids


def test_bad_page_arguments_are_usage_errors(client: Client) -> None:
    for kwargs in ({"limit": 0}, {"limit": True}, {"before_id": 0}, {"count_up_to": -1}):
        with pytest.raises(UsageError):
            client.page_tasks(**kwargs)
    with pytest.raises(UsageError):
        client.activity(0)


def test_task_page_dict(client: Client, tasks: list[dict[str, Any]]) -> None:
    page = client.page_tasks(limit=2)
    found = task_page_dict(page, client.task_states(page.tasks))
    assert found["total"] == len(tasks) and found["next_before"] == page.tasks[-1].id
    assert [task["id"] for task in found["tasks"]] == [task.id for task in page.tasks]
    assert {"state", "actions", "action_count"} <= set(found["tasks"][0])


# -- activity ----------------------------------------------------------------------------


def test_activity_counts_actions_ended_per_hour(client: Client) -> None:
    """One entry per hour, oldest first, this hour last, zeros included; done and failed
    actions by the hour of their end, nothing else counted."""
    this_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    ends = {
        "done": [this_hour + timedelta(minutes=1), this_hour - timedelta(minutes=30)] * 2,
        "failed": [this_hour - timedelta(hours=2, minutes=-59, seconds=-59)],
        "skipped": [this_hour],  # neither done nor failed
        "pending": [None],
    }
    ends["done"].append(this_hour - timedelta(hours=3, seconds=1))  # before the window
    for status, moments in ends.items():
        for at in moments:
            task_id = client.enqueue("a", [NOOP])
            with client.store._engine.begin() as conn:
                conn.execute(
                    update(t.actions)
                    .where(t.actions.c.task_id == task_id)
                    .values(status=status, ended_at=at)
                )
    hours = client.activity(3)
    assert [h.hour for h in hours] == [this_hour - timedelta(hours=n) for n in (2, 1, 0)]
    assert all(h.hour.tzinfo is not None for h in hours)
    assert [(h.done, h.failed) for h in hours] == [(0, 1), (2, 0), (2, 0)]
    assert activity_dict(hours)[0] == {
        "hour": (this_hour - timedelta(hours=2)).isoformat().replace("+00:00", "Z"),
        "done": 0,
        "failed": 1,
    }
    assert [(h.done, h.failed) for h in client.activity(1)] == [(2, 0)]


# -- bulk cancel and retry ---------------------------------------------------------------


def _statuses(client: Client) -> dict[int, str]:
    with client.store._engine.connect() as conn:
        return dict(conn.execute(select(t.tasks.c.id, t.tasks.c.status)).all())  # type: ignore[arg-type]


def _events(client: Client) -> list[tuple[int, str]]:
    with client.store._engine.connect() as conn:
        rows = conn.execute(select(t.events.c.task_id, t.events.c.message).order_by(t.events.c.id))
        return [(r.task_id, r.message) for r in rows]


def test_retry_where_follows_retry(client: Client, tasks: list[dict[str, Any]]) -> None:
    """Failed tasks of the filter are put back, each with retry's event; the others it
    selects are refused with retry's reason; tasks outside it are left alone."""
    where = TaskFilter(queues=frozenset({"reports"}), statuses=frozenset({"failed", "paused"}))
    chosen = sorted(t["id"] for t in tasks if _selects(t, where))
    failed = [t["id"] for t in tasks if _selects(t, where) and t["status"] == "failed"]
    before, events = _statuses(client), len(_events(client))
    result = client.retry_where(where, expect=len(chosen))
    assert (result.matched, result.changed, result.pending) == (len(chosen), len(failed), 0)
    refused = dict(result.refused)
    assert sorted(refused) == sorted(set(chosen) - set(failed))
    some = min(refused)
    assert refused[some] == f"task {some} is paused, not failed: nothing to retry"
    after = _statuses(client)
    assert {i for i in after if after[i] != before[i]} == set(failed)
    assert all(after[i] == "created" for i in failed)
    new_events = _events(client)[events:]
    assert sorted(new_events) == sorted((i, "retried: its failed actions") for i in failed)
    assert bulk_dict(result)["refused"][0] == {"id": min(refused), "reason": refused[some]}


def test_more_than_expected_changes_nothing(client: Client, tasks: list[dict[str, Any]]) -> None:
    where = TaskFilter(statuses=frozenset({"failed"}))
    n = sum(_selects(t, where) for t in tasks)
    before, events = _statuses(client), _events(client)
    with pytest.raises(InvalidState, match=f"^{n} task\\(s\\) match the filter now, more than"):
        client.retry_where(where, expect=n - 1)
    with pytest.raises(InvalidState, match=f"^{n} task"):
        client.cancel_where(where, expect=0)
    assert _statuses(client) == before and _events(client) == events
    assert client.retry_where(where, expect=n + 5, from_start=True).changed == n


def test_cancel_where_follows_cancel(client: Client, tasks: list[dict[str, Any]]) -> None:
    """Tasks nobody executes are cancelled; a running one held by a live claim gets a
    cancel request (pending); ended ones are refused; nothing outside the filter moves."""
    where = TaskFilter(queues=frozenset({"emails"}))
    chosen = [t for t in tasks if _selects(t, where)]
    held = next(t["id"] for t in chosen if t["status"] == "running")
    _set(
        client,
        held,
        claimed_by=holder_name(),
        lease_until=datetime.now(UTC) + timedelta(minutes=5),
    )
    before = _statuses(client)
    result = client.cancel_where(where, expect=len(chosen))
    ended = {t["id"] for t in chosen if t["status"] in ("finished", "failed", "cancelled")}
    waiting = {t["id"] for t in chosen if t["id"] not in ended} - {held}
    assert (result.matched, result.changed, result.pending) == (len(chosen), len(waiting), 1)
    assert {i for i, _why in result.refused} == ended
    after = _statuses(client)
    assert {i for i in after if after[i] != before[i]} == waiting
    assert after[held] == "running"
    task = client.get(held)
    assert task.cancel_requested_at is not None
    messages = dict(_events(client)[-len(waiting) - 1 :])
    assert messages[held] == "cancel requested: the run ends it at its next checkpoint"
    assert {messages[i] for i in waiting} == {"cancelled"}
    again = client.cancel_where(TaskFilter(statuses=frozenset({"running"})), expect=100)
    assert held not in dict(again.refused) and again.pending >= 1  # asked again: still pending


def test_a_task_that_left_the_filter_is_not_touched(
    client: Client, tasks: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch reads each task again with the filter, locked: one that stopped
    matching between the selection and its batch is refused, not changed."""
    from bgtaskex.store import bulk

    where = TaskFilter(statuses=frozenset({"created"}))
    chosen = sorted(t["id"] for t in tasks if t["status"] == "created")
    real = bulk._batch

    def meanwhile(store: Any, where: TaskFilter, batch: list[int], apply: Any) -> Any:
        _status(client, chosen[0], "running")  # a run took it since
        return real(store, where, batch, apply)

    monkeypatch.setattr(bulk, "_batch", meanwhile)
    result = client.cancel_where(where, expect=len(chosen))
    assert result.changed == len(chosen) - 1
    assert result.refused == ((chosen[0], f"task {chosen[0]} is no longer selected by the filter"),)
    assert _statuses(client)[chosen[0]] == "running"
