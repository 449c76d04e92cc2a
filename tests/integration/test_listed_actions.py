"""A listing's cost does not grow with the chains of the tasks it lists: `list_tasks` and
`page_tasks` (`bgtaskex list`, the dashboard's Tasks page) read of a task of 20,000
actions only those a listing shows (the current, first unfinished and first failed
one), in a bounded number of statements, and still show its true count, its state,
its action and its progress, as they would with every action read."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, update

from bgtaskex import tables as t
from bgtaskex.client import Client
from bgtaskex.models import Task
from bgtaskex.store.listed import WHOLE
from tests.support.cli import isolate, run_cli
from tests.support.web import close, make_web

CHAIN = 20_000
NOOP = "tests.scripted:Noop"


def long_task(
    client: Client,
    *,
    status: str,
    current: int | None,
    done_below: int,
    failed: Sequence[int] = (),
    **task: Any,
) -> int:
    """A task of CHAIN actions, enqueued whole, then put in a state by two updates:
    actions below `done_below` done (those of `failed` failed), the current one active
    with one death and some progress."""
    task_id = client.enqueue(f"chain-{status}", [(NOOP, {"n": n}) for n in range(CHAIN)])
    a, c = t.actions.c, t.tasks.c
    mine = a.task_id == task_id
    with client.store._engine.begin() as conn:
        conn.execute(update(t.actions).where(mine, a.rank < done_below).values(status="done"))
        for rank in failed:
            why = f"ValueError: bad row {rank}"
            values = {"status": "failed", "last_failure": why, "attempts": 2}
            conn.execute(update(t.actions).where(mine, a.rank == rank).values(values))
        if current is not None and status != "failed":
            progress = {"progress_done": 30.0, "progress_total": 120.0, "elapsed": 3.0}
            values = {"status": "active", "attempts": 1, **progress}
            conn.execute(update(t.actions).where(mine, a.rank == current).values(values))
        run_order = None if status == "failed" else 2
        conn.execute(
            update(t.tasks)
            .where(c.id == task_id)
            .values(status=status, current_rank=current, run_order=run_order, **task)
        )
    return task_id


@pytest.fixture
def chains(client: Client) -> dict[str, int]:
    """A task that died in execute of action 15,000 (action 7 failed before), a failed
    one (first failure at 12,345), one retried (pending from 9,000, no current action),
    and a short one."""
    ended = datetime.now(UTC)
    return {
        "died": long_task(client, status="running", current=15_000, done_below=15_000, failed=[7]),
        "failed": long_task(
            client,
            status="failed",
            current=CHAIN,
            done_below=CHAIN + 1,
            failed=[12_345, 19_000],
            ended_at=ended,
        ),
        "retried": long_task(client, status="created", current=None, done_below=9_000),
        "short": client.enqueue("short", [(NOOP, {}), (NOOP, {})]),
    }


@pytest.fixture
def statements(client: Client) -> Iterator[list[tuple[str, Any]]]:
    """The SELECT statements (with their parameters) the store sends while the test
    runs, from the fixture's end."""
    sent: list[tuple[str, Any]] = []

    def on_execute(*args: Any) -> None:
        if args[2].lstrip().upper().startswith("SELECT"):
            sent.append((args[2], args[3]))

    event.listen(client.store._engine, "before_cursor_execute", on_execute)
    yield sent
    event.remove(client.store._engine, "before_cursor_execute", on_execute)


def actions_read(client: Client, sql: str, params: Any) -> int:
    """The work of `sql` on the actions, run again: on PostgreSQL and MariaDB the rows
    of bgtaskex_actions its plan read (EXPLAIN ANALYZE, ANALYZE), counting those a
    filter dropped; on SQLite, which counts no rows, the steps of its virtual machine."""
    with client.store._engine.connect() as conn:
        dialect = conn.dialect.name
        if dialect == "sqlite":
            raw = conn.connection.driver_connection
            steps = [0]

            def step() -> int:
                steps[0] += 1
                return 0

            raw.set_progress_handler(step, 1)  # type: ignore[union-attr]
            try:
                conn.exec_driver_sql(sql, params).fetchall()
            finally:
                raw.set_progress_handler(None, 1)  # type: ignore[union-attr]
            return steps[0]
        if dialect == "postgresql":
            plan = conn.exec_driver_sql("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).scalar()
            return _pg_rows(plan[0]["Plan"])
        found = conn.exec_driver_sql("ANALYZE FORMAT=JSON " + sql, params).fetchone()
        assert found is not None
        return _mariadb_rows(json.loads(found[-1]))


def _pg_rows(node: dict[str, Any]) -> int:
    read = 0
    if node.get("Relation Name") == t.actions.name:
        per_loop = node["Actual Rows"] + node.get("Rows Removed by Filter", 0)
        read += round(per_loop * node["Actual Loops"])
    return read + sum(_pg_rows(child) for child in node.get("Plans", []))


def _mariadb_rows(found: Any) -> int:
    if isinstance(found, list):
        return sum(_mariadb_rows(item) for item in found)
    if not isinstance(found, dict):
        return 0
    read = 0
    if found.get("table_name") == t.actions.name:
        read += round(float(found.get("r_rows") or 0) * float(found.get("r_loops") or 0))
    return read + sum(_mariadb_rows(value) for value in found.values())


def _check_work(client: Client, statements: Sequence[tuple[str, Any]]) -> None:
    """No statement of the listing reads the chains: a few rows of each task (SQLite:
    steps far fewer than a chain's actions). Without its index hint, MariaDB read
    219,013 rows here."""
    bound = CHAIN // 4 if client.store._engine.dialect.name == "sqlite" else 100
    for sql, params in list(statements):
        if t.actions.name in sql:
            assert actions_read(client, sql, params) < bound, sql


def _expected(client: Client, task_ids: Sequence[int]) -> dict[int, tuple[Any, ...]]:
    """What a listing shows of each task, worked out from the whole task."""
    whole = [client.get(task_id) for task_id in task_ids]
    return {task.id: _shown(task, client) for task in whole}


def _shown(task: Task, client: Client) -> tuple[Any, ...]:
    state = client.task_states([task])[task.id]
    action = state.action
    assert action is not None
    return (
        state.kind,
        state.text,
        state.attempts,
        action.rank,
        action.progress,
        task.current_action,
        task.total_actions,
    )


def _check_listed(client: Client, listed: Sequence[Task], chains: dict[str, int]) -> None:
    expected = _expected(client, list(chains.values()))
    by_id = {task.id: task for task in listed}
    assert set(by_id) == set(expected)
    for name, task_id in chains.items():
        task = by_id[task_id]
        assert _shown(task, client) == expected[task_id], name
        if name == "short":
            assert task.action_count is None and len(task.actions) == 2
        else:
            assert task.action_count == CHAIN and len(task.actions) <= 4, (name, task.actions)
    died = client.task_states([by_id[chains["died"]]])[chains["died"]]
    assert re.fullmatch(r"execute died \(2/\d+\), retry at the next run", died.text), died
    failed = client.task_states([by_id[chains["failed"]]])[chains["failed"]]
    assert (failed.text, failed.action and failed.action.rank) == (
        "failed: ValueError: bad row 12345",
        12_345,
    )


def test_list_tasks_reads_a_bounded_part_of_long_chains(
    client: Client, chains: dict[str, int], statements: list[str]
) -> None:
    listed = client.list_tasks(limit=50)
    assert len(statements) <= 4, statements  # tasks (2 ranges), ranks, actions
    _check_work(client, statements)
    _check_listed(client, listed, chains)


def test_page_tasks_reads_a_bounded_part_of_long_chains(
    client: Client, chains: dict[str, int], statements: list[str]
) -> None:
    page = client.page_tasks(limit=50)
    assert len(statements) <= 6, statements  # ids, tasks, ranks, actions, count
    _check_work(client, statements)
    assert page.total == 4
    _check_listed(client, page.tasks, chains)


def test_a_task_of_whole_size_is_listed_whole(client: Client) -> None:
    task_id = client.enqueue("whole", [(NOOP, {"n": n}) for n in range(WHOLE)])
    longer = client.enqueue("longer", [(NOOP, {"n": n}) for n in range(WHOLE + 1)])
    listed = {task.id: task for task in client.list_tasks()}
    assert listed[task_id] == client.get(task_id)
    assert listed[longer].total_actions == WHOLE + 1 and len(listed[longer].actions) == 1


def test_list_json_and_dashboard_show_the_true_count(
    client: Client,
    chains: dict[str, int],
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    isolate(monkeypatch, tmp_path)
    found = run_cli("--database-url", db_url, "list", "--json").json()
    by_id = {task["id"]: task for task in found}
    died = by_id[chains["died"]]
    assert died["action_count"] == CHAIN and len(died["actions"]) <= 4
    assert died["state"]["rank"] == 15_000
    assert by_id[chains["short"]]["action_count"] == 2
    table = run_cli("--database-url", db_url, "list").out
    assert "15000/20000" in table and "12345/20000" in table
    web = make_web(db_url, tmp_path, max_attempts=client.settings.max_attempts)
    try:
        html = web.http.get("/tasks").text
        row = html.split(f'data-testid="task-row-{chains["died"]}"')[1].split("</tr>")[0]
        assert "15000/20000 Noop" in row and "execute died (2/" in row
        assert "25%" in row  # its progress bar: 30 of 120
        api = web.http.get("/api/tasks").json()
        (listed,) = [task for task in api["tasks"] if task["id"] == chains["failed"]]
        assert listed["action_count"] == CHAIN and listed["state"]["rank"] == 12_345
    finally:
        close(web)


def test_show_pages_carry_the_count_too(client: Client, chains: dict[str, int]) -> None:
    task, count = client.task_page(chains["died"], 10)
    assert (count, task.total_actions, task.action_count) == (CHAIN, CHAIN, CHAIN)
    short, count = client.task_page(chains["short"], 10)
    assert (count, short.total_actions, short.action_count) == (2, 2, None)
    assert replace(short, action_count=None) == client.get(chains["short"])
