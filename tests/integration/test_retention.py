"""Retention rules (README, "Retention rules") against real application databases.

The tests run on SQLite, PostgreSQL and MariaDB: the `app_url` fixture gives a fresh,
empty application database (tests/support/appdb.py) per test; bgtaskex's own store is a SQLite
file of the test's tmp_path, configured, like the rules, in a config file read by
`load_settings`. A walk is driven by `client.run_once` in a loop bounded in runs, walks
are queued on the "default" queue so that a plain run takes them.

`fill` spreads `created_at` before appdb.REFERENCE while `older_than` counts back from
now: `date_gap` picks an `older_than` whose cut-off falls in the middle of a wide gap
between two rows' dates, so the rows it selects are known exactly before the walk, even
though the walk fixes its cut-off a few seconds later.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    delete,
    event,
    insert,
    select,
    update,
)

from bgtaskex import tables
from bgtaskex.builtin import purge, retention
from bgtaskex.client import Client, connect
from bgtaskex.config import load_settings, parse_duration
from bgtaskex.exceptions import ConfigError
from bgtaskex.models import ActionRecord, ActionStatus, Progress, Task, TaskFilter, TaskStatus
from bgtaskex.rules import RetentionRule, parse_rules
from bgtaskex.run.observer import RunObserver
from tests import retention_hooks
from tests.support import appdb
from tests.support.appdb import Rows, rows

CHILDREN = [
    {"table": "ticket_comments", "column": "ticket_id"},
    {"table": "ticket_links", "column": "ticket_id"},
]
HOOKS = "tests.retention_hooks"


# -- helpers -------------------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def write_config(
    tmp_path: Path,
    rules: Sequence[Mapping[str, Any]],
    *,
    processes: Sequence[Mapping[str, Any]] = (),
    **top: Any,
) -> Path:
    """A config file: bgtaskex's store in tmp_path, `top` keys, processes and rules."""
    store = tmp_path / "bg.db"
    lines = [f"database_url = {toml_value(f'sqlite:///{store}')}"]
    lines += [f"{key} = {toml_value(value)}" for key, value in top.items()]
    for header, entries in (("processes", processes), ("retention_rules", rules)):
        for table in entries:
            lines.append(f"\n[[{header}]]")
            lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
    path = tmp_path / "bgtaskex.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def rule(app_url: str, name: str = "old", **fields: Any) -> dict[str, Any]:
    """A `[[retention_rules]]` table on the tickets of `app_url`."""
    return {"name": name, "database": app_url, "table": "tickets", **fields}


@pytest.fixture
def open_client(tmp_path: Path) -> Iterator[Callable[..., Client]]:
    """`open_client(rules, processes=..., **top)`: a client on the config of those rules."""
    opened: list[Client] = []

    def make(rules: Sequence[Mapping[str, Any]], **kwargs: Any) -> Client:
        settings = load_settings(write_config(tmp_path, rules, **kwargs), environ={})
        client = connect(settings=settings)
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.close()


@dataclass(frozen=True)
class Run:
    elapsed: float
    status: str
    deleted: int


def walk(client: Client, task_id: int, *, budget: float = 5.0, max_runs: int = 40) -> list[Run]:
    """Run until the task has ended (at most `max_runs` runs): each run's time, the task's
    status and the action's `deleted` after it."""
    runs: list[Run] = []
    for _ in range(max_runs):
        started = time.monotonic()
        client.run_once(max_execution_time=budget)
        elapsed = time.monotonic() - started
        task = client.get(task_id)
        runs.append(Run(elapsed, task.status, int(task.actions[0].params.get("deleted") or 0)))
        if TaskStatus(task.status).terminal:
            return runs
    pytest.fail(f"task {task_id} still {runs[-1].status} after {max_runs} runs: {runs[-3:]}")


def queue_and_walk(
    client: Client, name: str = "old", *, check: bool = True, **kwargs: Any
) -> tuple[int, list[Run]]:
    task_id, new = retention.queue_rule(client, name, queue="default", check=check)
    assert new
    return task_id, walk(client, task_id, **kwargs)


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Gap:
    """No ticket's created_at lies strictly between `low` and `high`; a rule with
    `older_than` (whole seconds) has its cut-off at `target`, their middle, for the next
    few minutes (it drifts with the clock)."""

    low: datetime
    high: datetime
    target: datetime
    older_than: str


def date_gap(url: str, near: datetime, margin: float = 300.0) -> Gap:
    """The first gap of at least 2 * `margin` seconds after `near` between the tickets'
    dates, and the `older_than` that puts a cut-off in its middle now."""
    with appdb.opened_engine(url) as engine, engine.connect() as conn:
        dates = conn.scalars(
            select(appdb.tickets.c.created_at)
            .where(appdb.tickets.c.created_at >= near)
            .where(appdb.tickets.c.created_at < near + timedelta(days=3))
            .order_by(appdb.tickets.c.created_at)
        ).all()
    for low, high in zip([near, *dates], dates, strict=False):
        if (high - low).total_seconds() >= 2 * margin:
            target = low + (high - low) / 2
            seconds = math.ceil((utcnow() - target).total_seconds())
            return Gap(low, high, target, f"{seconds}s")
    raise AssertionError(f"no gap of {2 * margin}s in the 3 days after {near}")


def assert_cutoff_in(gap: Gap, params: Mapping[str, Any]) -> None:
    """The walk's cut-off fell in the gap, so `gap.target` selects the same rows."""
    cutoff = datetime.fromisoformat(params["cutoff"]).astimezone(UTC).replace(tzinfo=None)
    assert gap.low < cutoff < gap.high, (gap, cutoff)


def assert_exactly_deleted(url: str, before: Rows, gone: set[int]) -> None:
    """The tickets `gone` and their child rows are deleted; every other row is kept."""
    after = rows(url)
    assert after.tickets == before.tickets - gone
    for table, kept in before.children.items():
        assert after.children[table] == {i: t for i, t in kept.items() if t not in gone}, table
    assert appdb.orphans(url) == 0


def action_of(client: Client, task_id: int) -> ActionRecord:
    (action,) = client.get(task_id).actions
    return action


# -- 1. exactness on 100,000 rows --------------------------------------------------------


def test_walk_deletes_exactly_the_rows_of_the_rule_and_their_children(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    appdb.create_app_schema(app_url)
    appdb.fill(app_url)  # 100,000 tickets, half of them with comments and links
    gap = date_gap(app_url, appdb.REFERENCE - timedelta(days=300))
    before = rows(app_url)
    expected = appdb.ids_where(
        app_url,
        "created_at < :cutoff AND status = :status",
        {"cutoff": gap.target, "status": "closed"},
    )
    with_children = {t for kept in before.children.values() for t in kept.values()} & expected
    assert 3_000 < len(expected) < 6_000 and with_children  # about 65/365 * 1/4
    client = open_client(
        [
            rule(
                app_url,
                date_column="created_at",
                older_than=gap.older_than,
                where="status = :status",
                params={"status": "closed"},
                also_delete=CHILDREN,
            )
        ]
    )

    task_id, _ = queue_and_walk(client, budget=30.0, max_runs=10)

    task = client.get(task_id)
    assert task.status == TaskStatus.FINISHED
    action = action_of(client, task_id)
    assert action.status == ActionStatus.DONE
    assert_cutoff_in(gap, action.params)
    assert_exactly_deleted(app_url, before, expected)
    assert action.params["deleted"] == len(expected)
    assert action.params["total"] == len(expected)
    assert action.params["skipped"] == [] and action.params["skipped_count"] == 0
    assert action.progress is not None
    assert action.progress.total == len(expected) == action.progress.done


# -- 2. resumable over many short runs -----------------------------------------------------


def test_walk_resumes_over_many_short_runs(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    # Each run first reflects the rule's tables: a few ms on SQLite, 0.1-0.3 s on a busy
    # PostgreSQL server, where a run of 0.2 s may then have no time left for a chunk:
    # 0.2 s on SQLite, 0.5 s on the servers.
    budget = 0.2 if app_url.startswith("sqlite") else 0.5
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 20_000)
    gap = date_gap(app_url, appdb.REFERENCE - timedelta(days=100))
    before = rows(app_url)
    statuses = {"a": "closed", "b": "archived"}
    expected = appdb.ids_where(
        app_url, "created_at < :cutoff AND status IN (:a, :b)", {"cutoff": gap.target, **statuses}
    )
    assert 6_000 < len(expected) < 8_500
    client = open_client(
        [
            rule(
                app_url,
                date_column="created_at",
                older_than=gap.older_than,
                where="status IN (:a, :b)",
                params=statuses,
                also_delete=CHILDREN,
                chunk_size=100,
            )
        ]
    )

    task_id, runs = queue_and_walk(client, budget=budget, max_runs=200)

    # thousands of rows by 100 take more than one run (SQLite deletes 2,000-odd per run,
    # a quiet PostgreSQL server 4,000-odd)
    assert len(runs) >= 2, runs
    assert [r.status for r in runs[:-1]] == [TaskStatus.PAUSED] * (len(runs) - 1)
    assert runs[-1].status == TaskStatus.FINISHED
    deleted = [r.deleted for r in runs]
    steps = list(itertools.pairwise([0, *deleted]))
    assert all(b >= a for a, b in steps), deleted
    # Each run moves the walk on, unless its budget was spent before the first chunk:
    # every run reflects the tables first (0.1-0.2 s on a busy PostgreSQL server).
    stalled = [r for r, (a, b) in zip(runs, steps, strict=True) if b == a]
    assert all(r.elapsed >= budget for r in stalled), stalled
    assert len(runs) - len(stalled) >= 2, deleted
    # A run ends at the first chunk boundary past its budget; a loaded machine (2 cores,
    # the whole suite) was seen to stretch one chunk and the reflection to 1.9 s past it.
    slow = [r.elapsed for r in runs if r.elapsed >= budget + 3.0]
    assert not slow, slow
    action = action_of(client, task_id)
    assert_cutoff_in(gap, action.params)
    assert action.params["chunk_size"] == 100
    assert deleted[-1] == len(expected) == action.params["total"]
    assert_exactly_deleted(app_url, before, expected)


# -- 3. property: exactly the rows of any rule, with any chunk size ------------------------


@dataclass(frozen=True)
class Ticket:
    id: int
    age: int  # whole days before the example's start, plus half a day
    status: str
    comments: int
    links: int


tickets_strategy = st.lists(
    st.builds(
        Ticket,
        id=st.integers(1, 2_000),
        age=st.integers(0, 20),
        status=st.sampled_from(appdb.STATUSES),
        comments=st.integers(0, 2),
        links=st.integers(0, 1),
    ),
    max_size=300,
    unique_by=lambda t: t.id,
)


@st.composite
def rule_strategy(draw: st.DrawFn) -> dict[str, Any]:
    """`older_than` in days and/or a status condition (= or <>), and a chunk size."""
    days = draw(st.none() | st.integers(0, 21))
    operators = st.sampled_from(["=", "<>"])
    operator = draw(operators if days is None else st.none() | operators)
    status = draw(st.sampled_from(appdb.STATUSES))
    fields: dict[str, Any] = {"chunk_size": draw(st.integers(1, 64))}
    if days is not None:
        fields.update(date_column="created_at", older_than=f"{days}d")
    if operator is not None:
        fields.update(where=f"status {operator} :status", params={"status": status})
    return fields


def selected(ticket: Ticket, fields: Mapping[str, Any]) -> bool:
    if "older_than" in fields and ticket.age < parse_duration(fields["older_than"]) / 86400:
        return False
    if "where" in fields:
        same = ticket.status == fields["params"]["status"]
        return same if " = " in fields["where"] else not same
    return True


def reset_tickets(url: str, data: Sequence[Ticket], start: datetime) -> None:
    """Replace every row of the three tables by `data` (ticket at start - age - 12 h)."""
    comments, links = [], []
    for t in data:
        comments += [{"ticket_id": t.id, "body": f"c{k}"} for k in range(t.comments)]
        links += [{"ticket_id": t.id, "url": f"u{k}"} for k in range(t.links)]
    with appdb.opened_engine(url) as engine, engine.begin() as conn:
        for table in reversed(appdb.TABLES):
            conn.execute(delete(table))
        rows = [
            {
                "id": t.id,
                "created_at": start - timedelta(days=t.age, hours=12),
                "status": t.status,
                "title": None,
            }
            for t in data
        ]
        for table, values in (
            (appdb.tickets, rows),
            (appdb.ticket_comments, comments),
            (appdb.ticket_links, links),
        ):
            if values:
                conn.execute(insert(table), values)


#: Old and young tickets, of each status in turn, each with a comment and a link: a rule
#: on status, on age or on both leaves rows between the ones it selects, so a walk that
#: deleted by key range, ignoring the condition or the age limit, deletes one of them.
INTERLEAVED = [
    Ticket(i, age=15 if i % 2 else 5, status=appdb.STATUSES[i % 4], comments=1, links=1)
    for i in range(1, 13)
]
DISCRIMINATING = [
    {"where": "status = :status", "params": {"status": "closed"}},
    {"date_column": "created_at", "older_than": "10d"},
    {
        "date_column": "created_at",
        "older_than": "10d",
        "where": "status = :status",
        "params": {"status": "pending"},
    },
]


def test_any_rule_deletes_exactly_its_rows(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    """Random rules and tickets, and first the DISCRIMINATING rules on INTERLEAVED
    tickets, so that a delete that ignores the rule fails on every backend, every time.
    No shrinking: each example is a walk, and the explicit ones are small already."""
    appdb.create_app_schema(app_url)
    # One store for every example; each example swaps in its own rule.
    base = open_client([rule(app_url, where="1 = 1")], sqlite_synchronous="OFF")

    @hypothesis_settings(
        max_examples=10,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(data=tickets_strategy, fields=rule_strategy())
    @example(data=INTERLEAVED, fields={**DISCRIMINATING[0], "chunk_size": 64})
    @example(data=INTERLEAVED, fields={**DISCRIMINATING[1], "chunk_size": 64})
    @example(data=INTERLEAVED, fields={**DISCRIMINATING[2], "chunk_size": 3})
    def check(data: list[Ticket], fields: dict[str, Any]) -> None:
        start = utcnow().replace(microsecond=0)
        reset_tickets(app_url, data, start)
        before = rows(app_url)
        rules = parse_rules([rule(app_url, also_delete=CHILDREN, **fields)], parse_duration)
        client = Client(base.store, base.registry, base.settings._replace(retention_rules=rules))
        expected = {t.id for t in data if selected(t, fields)}

        # check=False: the walk checks the rule too, one reflection less per example
        task_id, _ = queue_and_walk(client, check=False, budget=30.0, max_runs=5)

        action = action_of(client, task_id)
        assert client.get(task_id).status == TaskStatus.FINISHED
        assert action.status == (ActionStatus.DONE if expected else ActionStatus.SKIPPED)
        assert action.params["deleted"] == len(expected)
        assert action.params["total"] == len(expected)
        assert_exactly_deleted(app_url, before, expected)

    check()


# -- 4. rows that refuse to go --------------------------------------------------------------


REFUSED = (1, 2500, 2501)  # the first key and two neighbours


def test_rows_a_trigger_refuses_are_skipped_and_recorded(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 5_000)
    appdb.add_refusing_trigger(app_url, REFUSED)
    before = rows(app_url)
    # every ticket is older than REFERENCE, so than this cut-off: all 5,000 match
    days = (utcnow() - appdb.REFERENCE).days - 1
    client = open_client(
        [rule(app_url, date_column="created_at", older_than=f"{days}d", also_delete=CHILDREN)]
    )

    task_id, runs = queue_and_walk(client, budget=10.0, max_runs=150)

    task = client.get(task_id)
    assert task.status == TaskStatus.FINISHED
    action = action_of(client, task_id)
    # Each failing chunk ended its run (one death of the action), the next run halved
    # it: 1000 -> 500 -> ... -> 1 for the first key alone, then the row was skipped.
    assert action.attempts == len(runs) - 1 >= 10 + 1, (action.attempts, len(runs))
    assert action.status == ActionStatus.DONE
    assert_exactly_deleted(app_url, before, before.tickets - set(REFUSED))
    assert appdb.snapshot(app_url)["tickets"] == set(REFUSED)
    skipped = action.params["skipped"]
    assert [s["key"] for s in skipped] == list(REFUSED)
    assert all("protected" in s["error"] for s in skipped), skipped
    assert action.params["skipped_count"] == 3
    assert action.params["deleted"] == 5_000 - 3
    notes = [e.message for e in client.events(task_id)]
    for key in REFUSED:
        assert any(f"tickets.id={key}:" in m and "protected" in m for m in notes), key
    assert action.progress is not None and action.progress.done == 5_000


# -- 5. hooks -------------------------------------------------------------------------------


@pytest.fixture
def hook_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = str(tmp_path / "hooks.jsonl")
    monkeypatch.setenv(retention_hooks.LOG_VARIABLE, path)
    return path


def keys_told(path: str, hook: str = "record") -> list[int]:
    found = []
    for call in retention_hooks.calls(path):
        if call["hook"] == hook:
            assert call["table"] == "tickets"
            found += call["keys"]
    return found


def test_hooks_are_told_each_deleted_key_once(
    app_url: str, open_client: Callable[..., Client], hook_log: str
) -> None:
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 3_000)
    expected = appdb.ids_where(app_url, "status = :s", {"s": "closed"})
    client = open_client(
        [
            rule(
                app_url,
                where="status = :s",
                params={"s": "closed"},
                also_delete=CHILDREN,
                chunk_size=50,
                hooks=[f"{HOOKS}:record"],
            )
        ]
    )

    task_id, _ = queue_and_walk(client, budget=30.0)

    assert client.get(task_id).status == TaskStatus.FINISHED
    told = keys_told(hook_log)
    assert len(told) == len(set(told))
    assert set(told) == expected
    assert all(len(c["keys"]) <= 50 for c in retention_hooks.calls(hook_log))
    assert appdb.snapshot(app_url)["tickets"].isdisjoint(expected)
    assert action_of(client, task_id).params["deleted"] == len(expected)


def test_a_hook_that_raises_is_logged_and_changes_nothing_else(
    app_url: str,
    open_client: Callable[..., Client],
    hook_log: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The CLI's logging setup (run in-process by other tests) stops propagation at
    # "bgtaskex", before caplog's handler on the root logger.
    monkeypatch.setattr(logging.getLogger("bgtaskex"), "propagate", True)
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 1_000)
    before = rows(app_url)
    expected = appdb.ids_where(app_url, "status <> :s", {"s": "open"})
    client = open_client(
        [
            rule(
                app_url,
                where="status <> :s",
                params={"s": "open"},
                also_delete=CHILDREN,
                chunk_size=200,
                hooks=[f"{HOOKS}:record", f"{HOOKS}:explode", f"{HOOKS}:record_too"],
            )
        ]
    )

    with caplog.at_level(logging.ERROR, logger="bgtaskex.retention"):
        task_id, _ = queue_and_walk(client, budget=30.0)

    assert client.get(task_id).status == TaskStatus.FINISHED
    assert_exactly_deleted(app_url, before, expected)
    assert sorted(keys_told(hook_log)) == sorted(expected)
    assert sorted(keys_told(hook_log, "record_too")) == sorted(expected)
    raised = [
        r
        for r in caplog.records
        if r.name == "bgtaskex.retention" and f"{HOOKS}:explode" in r.getMessage()
    ]
    chunks = len([c for c in retention_hooks.calls(hook_log) if c["hook"] == "record"])
    assert len(raised) == chunks >= 2
    assert all(r.levelno == logging.ERROR and r.exc_info for r in raised)
    assert "hook exploded" in str(raised[0].exc_info[1])  # type: ignore[index]


def test_hooks_are_told_only_the_keys_that_went_when_chunks_fail(
    app_url: str, open_client: Callable[..., Client], hook_log: str
) -> None:
    """With hooks, the keys of a chunk are saved before it commits: a chunk that a
    trigger rolls back must not reach the hooks, the chunks after it must."""
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 400)
    refused = (7, 300)
    appdb.add_refusing_trigger(app_url, refused)
    expected = appdb.ids_where(app_url, "status <> :s", {"s": "open"})
    assert set(refused) <= expected
    client = open_client(
        [
            rule(
                app_url,
                where="status <> :s",
                params={"s": "open"},
                also_delete=CHILDREN,
                chunk_size=8,
                hooks=[f"{HOOKS}:record"],
            )
        ]
    )

    task_id, _ = queue_and_walk(client, budget=10.0, max_runs=60)

    assert client.get(task_id).status == TaskStatus.FINISHED
    action = action_of(client, task_id)
    gone = expected - set(refused)
    assert [s["key"] for s in action.params["skipped"]] == list(refused)
    told = keys_told(hook_log)
    assert sorted(told) == sorted(gone)  # each once, none of a rolled-back chunk
    assert action.params["deleted"] == len(gone)
    assert appdb.snapshot(app_url)["tickets"].isdisjoint(gone)


# -- 6. rules checked against their database ----------------------------------------------


def make_odd_tables(url: str) -> None:
    """Tables the rules cannot walk: a composite key, a text key, no key at all."""
    metadata = MetaData()
    for name, columns in (
        (
            "pairs",
            [
                Column("a", Integer),
                Column("b", Integer),
                Column("created_at", DateTime),
                PrimaryKeyConstraint("a", "b"),
            ],
        ),
        ("codes", [Column("code", String(10), primary_key=True), Column("created_at", DateTime)]),
        ("keyless", [Column("n", Integer), Column("created_at", DateTime)]),
    ):
        Table(name, metadata, *columns, mysql_engine="InnoDB")
    with appdb.opened_engine(url) as engine:
        metadata.create_all(engine)


OLD = {"date_column": "created_at", "older_than": "30d"}
BAD_RULES: dict[str, tuple[dict[str, Any], str]] = {
    "no_table": ({"table": "nosuch", **OLD}, "nosuch"),
    "no_date_column": ({"date_column": "nosuch", "older_than": "30d"}, "nosuch"),
    "not_a_date": ({"date_column": "status", "older_than": "30d"}, "not a date"),
    "no_child_table": ({**OLD, "also_delete": [{"table": "nosuch", "column": "x"}]}, "nosuch"),
    "no_child_column": (
        {**OLD, "also_delete": [{"table": "ticket_comments", "column": "nosuch"}]},
        "nosuch",
    ),
    "param_missing": ({"where": "status = :x"}, ":x"),
    # run on zero rows by the check (a false() there was once folded away, unchecked)
    "where_no_column": ({"where": "nosuch = 1"}, "nosuch"),
    "where_syntax": ({"where": "status = = 'x'"}, ""),
    "composite_key": ({"table": "pairs", **OLD}, "2-column primary key"),
    "text_key": ({"table": "codes", **OLD}, "not an integer"),
    "no_key": ({"table": "keyless", **OLD}, "no primary key"),
}


@pytest.fixture
def odd_app(app_url: str) -> str:
    """The application database with 50 tickets and the tables no rule can walk."""
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 50, children=False)
    make_odd_tables(app_url)
    return app_url


def refusals(
    client: Client, cases: Mapping[str, tuple[dict[str, Any], str]], call: str
) -> list[str]:
    """What is wrong with how `call` treated each bad rule of `cases` (one line each)."""
    problems = []
    for case, (_fields, detail) in cases.items():
        tasks = client.count_tasks()
        try:
            if call == "preview":
                retention.preview(client, case)
            else:
                retention.queue_rule(client, case, queue="default")
        except ConfigError as err:
            message = str(err)
            if not message.startswith(f"retention rule {case!r}: ") or detail not in message:
                problems.append(f"{call} {case}: message {message!r}")
            if "\n" in message:
                problems.append(f"{call} {case}: more than one line")
        except Exception as err:
            problems.append(f"{call} {case}: {type(err).__name__}, not a ConfigError: {err}")
        else:
            problems.append(f"{call} {case}: accepted")
        if client.count_tasks() != tasks:
            problems.append(f"{call} {case}: a task was queued")
    return problems


def bad_rules_client(
    app_url: str, open_client: Callable[..., Client], cases: Mapping[str, Any]
) -> Client:
    return open_client([rule(app_url, case, **fields) for case, (fields, _) in cases.items()])


def test_rules_their_database_cannot_serve_are_refused(
    odd_app: str, open_client: Callable[..., Client]
) -> None:
    before = appdb.snapshot(odd_app)
    client = bad_rules_client(odd_app, open_client, BAD_RULES)

    problems = refusals(client, BAD_RULES, "preview")
    problems += refusals(client, BAD_RULES, "queue_rule")

    assert problems == []
    assert client.count_tasks() == 0
    assert appdb.snapshot(odd_app) == before


# -- 7. preview -----------------------------------------------------------------------------


def test_preview_counts_and_samples_without_deleting(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 5_000)
    gap = date_gap(app_url, appdb.REFERENCE - timedelta(days=200))
    expected = sorted(
        appdb.ids_where(
            app_url, "created_at < :cutoff AND status = :s", {"cutoff": gap.target, "s": "open"}
        )
    )
    before = appdb.snapshot(app_url)
    client = open_client(
        [
            rule(
                app_url,
                date_column="created_at",
                older_than=gap.older_than,
                where="status = :s",
                params={"s": "open"},
                also_delete=CHILDREN,
            )
        ]
    )

    preview = retention.preview(client, "old", sample=5)

    assert len(expected) > 5
    assert (preview.rule, preview.table, preview.key) == ("old", "tickets", "id")
    assert preview.count == len(expected)
    assert list(preview.sample) == expected[:5]
    assert (preview.low, preview.high) == (expected[0], expected[-1])
    assert appdb.snapshot(app_url) == before
    assert client.count_tasks() == 0


# -- 8. nothing to delete ---------------------------------------------------------------------


def test_a_walk_that_finds_nothing_finishes_with_its_action_skipped(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 200)
    before = appdb.snapshot(app_url)
    client = open_client([rule(app_url, where="status = :s", params={"s": "nosuch"})])

    task_id, runs = queue_and_walk(client, budget=5.0, max_runs=3)

    assert len(runs) == 1
    assert client.get(task_id).status == TaskStatus.FINISHED
    action = action_of(client, task_id)
    assert action.status == ActionStatus.SKIPPED
    assert action.params["total"] == 0 and action.params["deleted"] == 0
    assert appdb.snapshot(app_url) == before


# -- 9. the planner of the retention process ------------------------------------------------


def test_the_planner_queues_each_enabled_rule_once_a_day(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 300)
    closed = appdb.ids_where(app_url, "status = 'closed'")
    archived = appdb.ids_where(app_url, "status = 'archived'")
    client = open_client(
        [
            rule(app_url, "closed", where="status = 'closed'", also_delete=CHILDREN),
            rule(app_url, "archived", where="status = 'archived'", also_delete=CHILDREN),
            rule(app_url, "open", where="status = 'open'", enabled=False),
        ],
        processes=[{"name": "retention", "every": "60s"}],
    )
    process = client.settings.process("retention")
    assert process.window is None

    queued = retention.queue_due_rules(client)

    assert len(queued) == 2
    tasks = [client.get(i) for i in queued]
    assert sorted(t.name for t in tasks) == ["retention:archived", "retention:closed"]
    assert {t.queue for t in tasks} == {"retention"}
    assert retention.queue_due_rules(client) == []  # both walks still to run
    assert client.count_tasks() == 2

    for _ in range(5):  # the process's runs: the planner, then the walks
        client.run_once(process=process, max_execution_time=10.0)
        if all(TaskStatus(client.get(i).status).terminal for i in queued):
            break
    assert {client.get(i).status for i in queued} == {TaskStatus.FINISHED}
    assert appdb.snapshot(app_url)["tickets"].isdisjoint(closed | archived)
    assert client.count_tasks() == 2  # the planner queued nothing beside them

    assert retention.queue_due_rules(client) == []  # finished less than a day ago
    with client.store._engine.begin() as conn:  # as if they were queued yesterday
        yesterday = datetime.now(UTC) - timedelta(hours=25)
        conn.execute(update(tables.tasks).values(created_at=yesterday))
    again = retention.queue_due_rules(client)
    assert sorted(client.get(i).name for i in again) == ["retention:archived", "retention:closed"]
    assert client.count_tasks(TaskFilter(name_glob="retention:open")) == 0


# -- 10. parameters, crashes -----------------------------------------------------------------


@pytest.mark.parametrize("param", ["after", "high", "keys"])
def test_a_where_parameter_keeps_its_value_whatever_its_name(
    app_url: str, open_client: Callable[..., Client], hook_log: str, param: str
) -> None:
    """Named like the walk's own bind parameters once were (:after and :high, and :keys
    with hooks), a parameter of the rule took the walk's value: the walk deleted the odd
    rows of a rule selecting the even ones, or none."""
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 400)
    before = rows(app_url)
    even = appdb.ids_where(app_url, "MOD(id, 2) = 0")
    hooks = [f"{HOOKS}:record"] if param == "keys" else []
    client = open_client(
        [
            rule(
                app_url,
                where=f"MOD(id, 2) = :{param}",
                params={param: 0},
                also_delete=CHILDREN,
                chunk_size=50,
                hooks=hooks,
            )
        ]
    )
    assert retention.preview(client, "old").count == len(even)

    task_id, _ = queue_and_walk(client, budget=30.0, max_runs=5)

    assert client.get(task_id).status == TaskStatus.FINISHED
    assert action_of(client, task_id).params["deleted"] == len(even)
    assert_exactly_deleted(app_url, before, even)
    if hooks:
        assert sorted(keys_told(hook_log)) == sorted(even)


def test_a_crash_right_after_a_commit_still_counts_the_chunk_and_tells_the_hooks(
    app_url: str, open_client: Callable[..., Client], hook_log: str
) -> None:
    """A hook that kills the run (a BaseException: nothing more is written, as with
    kill -9) right after the first chunk committed: the next run finds the chunk's rows
    gone, counts them once and tells the hooks (again: README, "may tell them twice")."""
    appdb.create_app_schema(app_url)
    appdb.fill(app_url, 1_000)
    before = rows(app_url)
    expected = appdb.ids_where(app_url, "status <> :s", {"s": "open"})
    client = open_client(
        [
            rule(
                app_url,
                where="status <> :s",
                params={"s": "open"},
                also_delete=CHILDREN,
                chunk_size=100,
                hooks=[f"{HOOKS}:record", f"{HOOKS}:crash_once"],
            )
        ]
    )
    task_id, _ = retention.queue_rule(client, "old", queue="default")

    with pytest.raises(retention_hooks.SimulatedCrash):
        client.run_once(max_execution_time=30.0)

    first = keys_told(hook_log)
    assert len(first) == 100 and set(first) <= expected
    assert rows(app_url).tickets.isdisjoint(first)  # committed before the crash
    task = client.get(task_id)
    assert task.status == TaskStatus.RUNNING and task.actions[0].params["deleted"] == 0

    walk(client, task_id, budget=30.0, max_runs=5)

    assert client.get(task_id).status == TaskStatus.FINISHED
    action = action_of(client, task_id)
    assert action.params["deleted"] == len(expected) == action.params["total"]
    assert_exactly_deleted(app_url, before, expected)
    told = Counter(keys_told(hook_log))
    assert set(told) == expected
    assert {k for k, n in told.items() if n > 1} == set(first)
    assert max(told.values()) == 2


# -- 11. the rule's `where` is one term in every statement ------------------------------------

# Atoms over three columns of `tickets` (title may be NULL: SQL's third truth value), and
# how Python reads them: True, False or None (unknown).
ATOMS: dict[str, Callable[[Mapping[str, Any]], bool | None]] = {
    "status = 'closed'": lambda r: r["status"] == "closed",
    "status = 'spam'": lambda r: r["status"] == "spam",
    "status <> 'open'": lambda r: r["status"] != "open",
    "title = 'a'": lambda r: None if r["title"] is None else r["title"] == "a",
    "title IS NULL": lambda r: r["title"] is None,
    "id > 12": lambda r: r["id"] > 12,
}

Condition = str | tuple[Any, ...]  # an atom, ("NOT", c), ("AND"/"OR", c, c), ("()", c)

conditions: st.SearchStrategy[Condition] = st.recursive(
    st.sampled_from(sorted(ATOMS)),
    lambda inner: (
        st.tuples(st.sampled_from(["AND", "OR"]), inner, inner)
        | st.tuples(st.just("NOT"), inner)
        | st.tuples(st.just("()"), inner)
    ),
    max_leaves=6,
)

_BINDING = {"OR": 1, "AND": 2, "NOT": 3}  # how tightly each binds; atoms and () 4


def to_sql(condition: Condition) -> tuple[str, int]:
    """The condition as SQL with only the parentheses that precedence needs (plus the
    "()" nodes'), and how tightly its top binds."""
    if isinstance(condition, str):
        return condition, 4
    op, *args = condition
    if op == "()":
        return f"({to_sql(args[0])[0]})", 4
    binding = _BINDING[op]
    parts = []
    for arg in args:
        sql, inner = to_sql(arg)
        parts.append(f"({sql})" if inner < binding or (op == "NOT" and inner == 3) else sql)
    return (f"NOT {parts[0]}" if op == "NOT" else f" {op} ".join(parts)), binding


def truth(condition: Condition, row: Mapping[str, Any]) -> bool | None:
    """SQL's three-valued reading of the condition on `row`."""
    if isinstance(condition, str):
        return ATOMS[condition](row)
    op, *args = condition
    values = [truth(arg, row) for arg in args]
    if op == "()":
        return values[0]
    if op == "NOT":
        return None if values[0] is None else not values[0]
    decisive = op == "OR"  # True decides an OR, False an AND
    if decisive in values:
        return decisive
    return None if None in values else not decisive


CUTOFF = datetime(2025, 6, 1, tzinfo=UTC)
#: Every combination of status, title and age once, ids in a shuffled (fixed) order, and a
#: comment on every ticket: a key range cuts through every kind of row.
GRID = [
    {"status": status, "title": title, "old": old}
    for status in ("closed", "spam", "open", "pending")
    for title in ("a", "b", None)
    for old in (True, False)
]
GRID_ROWS = [
    {**row, "id": i} for i, row in enumerate(random.Random(12).sample(GRID, len(GRID)), start=1)
]


def rule_of(url: str, where: str, aged: bool = False) -> RetentionRule:
    """A rule on the grid's tickets (and their comments), older than CUTOFF with `aged`."""
    fields: dict[str, Any] = {"where": where, "also_delete": CHILDREN[:1]}
    if aged:
        fields.update(date_column="created_at", older_than="1d")  # CUTOFF is given
    (found,) = parse_rules([rule(url, **fields)], parse_duration)
    return found


def grid_tickets(url: str) -> None:
    appdb.create_app_schema(url)
    with appdb.opened_engine(url) as engine, engine.begin() as conn:
        conn.execute(
            insert(appdb.tickets),
            [
                {
                    "id": r["id"],
                    "status": r["status"],
                    "title": r["title"],
                    "created_at": (CUTOFF - timedelta(days=10 if r["old"] else -10)).replace(
                        tzinfo=None
                    ),
                }
                for r in GRID_ROWS
            ],
        )
        conn.execute(
            insert(appdb.ticket_comments),
            [{"id": r["id"], "ticket_id": r["id"], "body": "c"} for r in GRID_ROWS],
        )


def test_a_where_stays_one_term_in_every_statement(app_url: str) -> None:
    """Conditions of OR, AND, NOT and parentheses, with and without an age limit, over
    any key range: the count, the key reads, the child deletes and the deletes select
    exactly the rows Python's reading selects (each example rolled back)."""
    grid_tickets(app_url)
    engine = purge.open_engine(rule_of(app_url, "1 = 1"), app_url)
    everything = {r["id"] for r in GRID_ROWS}

    @hypothesis_settings(max_examples=100, deadline=None, database=None)
    @given(
        condition=conditions,
        aged=st.booleans(),
        bounds=st.tuples(st.integers(0, 25), st.integers(0, 25)),
    )
    @example(condition=("OR", "status = 'closed'", "status = 'spam'"), aged=True, bounds=(5, 18))
    @example(condition=("OR", "title IS NULL", ("NOT", "id > 12")), aged=False, bounds=(3, 20))
    def check(condition: Condition, aged: bool, bounds: tuple[int, int]) -> None:
        after, high = sorted(bounds)
        where = to_sql(condition)[0]
        target = purge.Target(rule_of(app_url, where, aged), engine, CUTOFF)
        chosen = [
            r["id"] for r in GRID_ROWS if truth(condition, r) is True and (r["old"] or not aged)
        ]
        expected = sorted(k for k in chosen if after < k <= high)
        with engine.connect() as conn, conn.begin() as transaction:
            found = conn.execute(target.count_statement()).one()
            whole = (len(chosen), min(chosen, default=None), max(chosen, default=None))
            assert tuple(found) == whole, where
            assert target.count(conn, after, high) == len(expected), where
            assert target.candidates(conn, after, high, 1000, lock=False) == expected, where
            assert target.candidates(conn, after, high, 2) == expected[:2], where
            assert target.lock_range(conn, after, high) == expected, where
            assert target.delete_range(conn, after, high) == len(expected), where
            left = set(conn.scalars(select(appdb.tickets.c.id)))
            comments = set(conn.scalars(select(appdb.ticket_comments.c.ticket_id)))
            transaction.rollback()
        assert left == comments == everything - set(expected), where

    try:
        check()
    finally:
        engine.dispose()


class StopAfterAChunk(RunObserver):
    """Asks the run to stop as soon as the walk reports a deleted row: the walk pauses
    after its first chunk, whatever the machine's speed."""

    def __init__(self) -> None:
        self.stop = threading.Event()

    def progress(self, task: Task, rank: int, progress: Progress) -> None:
        if progress.done:
            self.stop.set()


def first_chunk(client: Client, task_id: int) -> ActionRecord:
    """Run the walk `task_id` for one chunk, which it must leave paused."""
    observer = StopAfterAChunk()
    client.run_once(max_execution_time=30.0, stop=observer.stop, observer=observer)
    assert client.get(task_id).status == TaskStatus.PAUSED
    return action_of(client, task_id)


def add_tickets(url: str, *tickets: tuple[int, str, datetime]) -> None:
    """Tickets (id, status, created_at), naive UTC, whole seconds."""
    with appdb.opened_engine(url) as engine, engine.begin() as conn:
        conn.execute(
            insert(appdb.tickets),
            [
                {"id": i, "status": s, "created_at": at.replace(microsecond=0), "title": None}
                for i, s, at in tickets
            ],
        )


@contextmanager
def statements_run() -> Iterator[list[str]]:
    """The SQL text of every statement any engine sends while the block runs."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        sent.append(statement)

    event.listen(Engine, "before_cursor_execute", record)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def placeholders_as_qmarks(sql: str) -> str:
    """One spelling for the placeholders of every driver (:name, %(name)s, ?)."""
    return re.sub(r"%\(\w+\)s|(?<![:\w]):\w+", "?", sql)


def test_an_or_in_where_keeps_to_the_age_limit_and_the_key_range(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    """The issue's rule: older than 90 days, `status = 'closed' OR status = 'spam'`.
    Young spam survives, and so does spam added above the walk's key range; preview shows
    the very statements the walk sends, the condition in parentheses."""
    appdb.create_app_schema(app_url)
    now, old, young = utcnow(), utcnow() - timedelta(days=200), utcnow() - timedelta(days=10)
    add_tickets(
        app_url,
        (1, "spam", young),
        (2, "closed", old),
        (3, "spam", old),
        (4, "spam", young),
        (5, "closed", young),
        (6, "open", old),
        (7, "spam", old),
        (8, "closed", old),
        (9, "spam", young),
    )
    where = "status = 'closed' OR status = 'spam'"
    client = open_client(
        [rule(app_url, date_column="created_at", older_than="90d", where=where, chunk_size=1)]
    )
    shown = retention.preview(client, "old")
    assert (shown.count, shown.low, shown.high) == (4, 2, 8)
    statements = {placeholders_as_qmarks(sql) for _, sql in shown.sql}
    assert all(f"({where})" in sql for sql in statements)
    task_id, _ = retention.queue_rule(client, "old", queue="default")

    with statements_run() as sent:
        first_chunk(client, task_id)
        add_tickets(app_url, (20, "spam", old), (21, "closed", old), (22, "spam", now))
        walk(client, task_id, budget=30.0, max_runs=3)

    assert rows(app_url).tickets == {1, 4, 5, 6, 9, 20, 21, 22}
    assert action_of(client, task_id).params["deleted"] == 4
    walked = {placeholders_as_qmarks(sql) for sql in sent if where in sql}
    kinds = {what for what, sql in shown.sql if placeholders_as_qmarks(sql) in walked}
    assert walked <= statements and kinds == {"check", "count", "keys", "lock", "delete"}


def test_a_resumed_walk_keeps_its_cutoff_and_key_range(
    app_url: str, open_client: Callable[..., Client]
) -> None:
    """Paused after its first chunk, a walk resumes after rows in its range have aged
    past its cut-off and rows were added above its range: it leaves both to the next
    walk, which takes them."""
    appdb.create_app_schema(app_url)
    old, fresh = utcnow() - timedelta(hours=2), utcnow() + timedelta(hours=1)
    add_tickets(app_url, *((i, "closed", old if i in (1, 2, 3, 6) else fresh) for i in range(1, 7)))
    client = open_client([rule(app_url, date_column="created_at", older_than="1h", chunk_size=1)])
    task_id, _ = retention.queue_rule(client, "old", queue="default")

    params = first_chunk(client, task_id).params
    assert (params["low"], params["high"], params["after"]) == (1, 6, 1)
    cutoff = datetime.fromisoformat(params["cutoff"]).astimezone(UTC).replace(tzinfo=None)
    # 4 and 5, young at the start, become just younger than the walk's cut-off, which
    # "older than 1h" from now soon passes; 7 and 8 come above the walk's range.
    just_after = cutoff.replace(microsecond=0) + timedelta(seconds=1)
    with appdb.opened_engine(app_url) as engine, engine.begin() as conn:
        conn.execute(
            update(appdb.tickets)
            .values(created_at=just_after)
            .where(appdb.tickets.c.id.in_([4, 5]))
        )
    add_tickets(app_url, (7, "closed", old), (8, "closed", old))
    while utcnow() - timedelta(hours=1) <= just_after + timedelta(seconds=1):
        time.sleep(0.05)  # the clock must pass them: a cut-off of now would take them
    walk(client, task_id, budget=30.0, max_runs=3)

    assert rows(app_url).tickets == {4, 5, 7, 8}
    assert action_of(client, task_id).params["deleted"] == 4
    again, _ = queue_and_walk(client, budget=30.0, max_runs=3)
    assert rows(app_url).tickets == set()
    assert action_of(client, again).params["deleted"] == 4
