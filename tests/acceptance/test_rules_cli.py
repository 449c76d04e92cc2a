"""`bgtaskex rules` and retention walks through the real CLI, in subprocesses.

bgtaskex's own database is a SQLite file of the test; the rules' application database is
the one of tests/support/appdb.py (tickets with comments and links), on SQLite unless a test says
otherwise. Results are checked against that database with the helpers of tests/support/appdb.py.

Kills are real: SIGKILL to the process group of a `bgtaskex run-once` started in its own
session. "In the middle of a chunk" is made certain, not left to luck: on PostgreSQL and
MariaDB a BEFORE DELETE trigger sleeps on one ticket and the test waits until the server
shows it; on SQLite the test holds a read lock that keeps the chunk from committing and
waits for its rollback journal (or, for the random kills, records which kills left one).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from tests.acceptance.conftest import Bgx, command, describe, run_many, summary, wait_until
from tests.rules_cli_hooks import LOG_ENV, calls
from tests.support import appdb

HOOK = "tests.rules_cli_hooks:record"
PLANNER = "bgtaskex.builtin.retention:queue_due_rules"
CHILDREN = [
    {"table": "ticket_comments", "column": "ticket_id"},
    {"table": "ticket_links", "column": "ticket_id"},
]
DELETES = "rows of tickets where created_at older than 30d and (status = :status)"
#: The WHERE of old_closed's statements, as compiled for SQLite.
RANGE_AND_RULE = (
    "tickets.id > :bgtaskex_after AND tickets.id <= :bgtaskex_high "
    "AND tickets.created_at < :bgtaskex_cutoff AND (status = :status)"
)
#: A rule database nothing listens on; its password must never be shown.
DOWN_URL = "postgresql+psycopg://u:secret@127.0.0.1:1/x"
DOWN_MASKED = "postgresql+psycopg://u:***@127.0.0.1:1/x"
SLOW_TRIGGER = "tickets_slow_delete"


# -- configuration ---------------------------------------------------------------------


def toml(value: Any) -> str:
    """A TOML value (JSON's string escapes are TOML's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml, value)) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    raise TypeError(value)


def old_closed(name: str, database: str, **more: Any) -> dict[str, Any]:
    """A rule with both options: closed tickets older than 30 days, and their children."""
    return {
        "name": name,
        "database": database,
        "table": "tickets",
        "date_column": "created_at",
        "older_than": "30d",
        "where": "status = :status",
        "params": {"status": "closed"},
        "also_delete": CHILDREN,
        **more,
    }


def where_rule(name: str, database: str, where: str, **more: Any) -> dict[str, Any]:
    return {"name": name, "database": database, "table": "tickets", "where": where, **more}


class Cli:
    """The `bgtaskex` command with a config file of the test (rules, processes)."""

    def __init__(
        self,
        bgx: Bgx,
        tmp_path: Path,
        rules: Sequence[Mapping[str, Any]],
        processes: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        self.bgx = bgx
        self.own_db = tmp_path / "bgtaskex.db"
        self.config = tmp_path / "bgtaskex.toml"
        lines = [f"database_url = {toml(f'sqlite:///{self.own_db}')}"]
        for table, items in (("processes", processes), ("retention_rules", rules)):
            for item in items:
                lines += ["", f"[[{table}]]", *(f"{k} = {toml(v)}" for k, v in item.items())]
        self.config.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def args(self, *args: object) -> list[str]:
        return ["--config", str(self.config), *map(str, args)]

    def __call__(self, *args: object) -> subprocess.CompletedProcess[str]:
        return self.bgx(*self.args(*args))

    def ok(self, *args: object) -> subprocess.CompletedProcess[str]:
        result = self(*args)
        assert result.returncode == 0, describe(result)
        assert "Traceback" not in result.stderr, describe(result)
        return result

    def json(self, *args: object) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def many(
        self, calls: Mapping[str, Sequence[object]]
    ) -> dict[str, subprocess.CompletedProcess[str]]:
        """Independent calls side by side: {key: CompletedProcess}."""
        return run_many(self.bgx.env, {k: (self.args(*a), None) for k, a in calls.items()})

    def tasks(self) -> list[dict[str, Any]]:
        return self.json("list")  # type: ignore[no-any-return]

    def show(self, task_id: int) -> dict[str, Any]:
        return self.json("show", task_id)  # type: ignore[no-any-return]

    def queue(self, name: str, queue: str | None = None) -> int:
        """`rules run NAME [--queue QUEUE]`: the new task's id."""
        result = self.ok("rules", "run", name, *(("--queue", queue) if queue else ()))
        where = re.escape(queue or "retention")
        match = re.fullmatch(
            rf"rule {re.escape(name)}: queued task (\d+) on queue {where}\n", result.stdout
        )
        assert match, describe(result)
        return int(match[1])

    def start(self, *args: object) -> subprocess.Popen[str]:
        """A `bgtaskex` in its own session (the test kills its process group)."""
        proc = subprocess.Popen(
            command(*self.args(*args)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.bgx.env,
            start_new_session=True,
        )
        self.bgx.started.append(proc)  # killed at the end of the test if still running
        return proc

    def run_until_finished(
        self, task_id: int, *run_args: object, most: int = 10
    ) -> tuple[int, dict[str, Any]]:
        """`run-once` until `show` says the task finished: how many runs it took, and the
        task as `show --json` gives it."""
        for runs in range(1, most + 1):
            summary(self.ok("run-once", *run_args))
            task = self.show(task_id)
            if task["status"] == "finished":
                return runs, task
            assert task["status"] in ("created", "running", "paused"), task
        pytest.fail(f"task {task_id} not finished after {most} runs: {task}")


def kill_group(proc: subprocess.Popen[str]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr)


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *mentions: str) -> str:
    """Exit `code`, nothing on stdout, one `bgtaskex: error:` line naming `mentions`."""
    assert result.returncode == code, describe(result)
    assert result.stdout == "", describe(result)
    assert "Traceback" not in result.stderr, describe(result)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgtaskex: error: "), describe(result)
    for text in mentions:
        assert text in lines[0], describe(result)
    return lines[0]


# -- the application database --------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def fill_app(url: str, *, old: int, recent: int = 0, seed: int = 0) -> None:
    """Tickets older than 40 days, then `recent` ones of the last 20 days (inside the
    rules' key range), then old ones again: the 30-day cut-off separates them cleanly."""
    appdb.create_app_schema(url)
    now = utcnow()
    appdb.fill(url, old // 2, seed=seed, start=now - timedelta(days=40), days=300)
    if recent:
        appdb.fill(url, recent, seed=seed + 1, start=now, days=20)
    appdb.fill(url, old - old // 2, seed=seed + 2, start=now - timedelta(days=40), days=300)


def closed_and_old(url: str) -> set[int]:
    """What `old_closed` selects."""
    cutoff = utcnow() - timedelta(days=30)
    return appdb.ids_where(
        url, "created_at < :cutoff AND status = :s", {"cutoff": cutoff, "s": "closed"}
    )


def consistent(url: str, before: appdb.Rows, matching: set[int]) -> set[int]:
    """Check the application database against `before` (rows added since are not
    looked at): only tickets of `matching` are gone, with exactly their child rows, and
    no child row is orphaned. The ids gone."""
    now = appdb.rows(url)
    gone = before.tickets - now.tickets
    assert gone <= matching, f"deleted rows the rule does not select: {sorted(gone - matching)[:9]}"
    assert appdb.orphans(url) == 0
    for table, rows in before.children.items():
        kept = {cid for cid, ticket in rows.items() if ticket not in gone}
        assert set(now.children[table]) & set(rows) == kept, f"{table}: wrong child rows went"
    return gone


def ticket_count(path: Path) -> int:
    """Tickets in the SQLite file, read cheaply (for polling)."""
    conn = sqlite3.connect(path, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM tickets").fetchone()[0])
    finally:
        conn.close()


def own_task_count(cli: Cli) -> int:
    """How many tasks bgtaskex's SQLite file holds (none if it was never created)."""
    if not cli.own_db.exists():
        return 0
    conn = sqlite3.connect(cli.own_db, timeout=30)
    try:
        return int(conn.execute("SELECT count(*) FROM bgtaskex_tasks").fetchone()[0])
    except sqlite3.OperationalError:  # no such table: never used
        return 0
    finally:
        conn.close()


def own_status(cli: Cli, task_id: int) -> str:
    """The task's status, read straight from bgtaskex's SQLite file (no CLI start-up)."""
    conn = sqlite3.connect(cli.own_db, timeout=30)
    try:
        query = "SELECT status FROM bgtaskex_tasks WHERE id = ?"
        return str(conn.execute(query, (task_id,)).fetchone()[0])
    finally:
        conn.close()


def walk_params(cli: Cli, task_id: int) -> dict[str, Any]:
    (action,) = cli.show(task_id)["actions"]
    return action["params"]  # type: ignore[no-any-return]


# -- rules list ------------------------------------------------------------------------


def test_rules_list_before_any_run_masks_and_does_not_connect(bgx: Bgx, tmp_path: Path) -> None:
    """Both rules, "never run"; the rule database's password is masked, and `list` does
    not connect to it (nothing listens there: a connection would fail with exit 4)."""
    app = f"sqlite:///{tmp_path / 'app.db'}"
    cli = Cli(
        bgx,
        tmp_path,
        [
            old_closed("old_closed", app, chunk_size=50),
            where_rule("elsewhere", DOWN_URL, "1 = 1", enabled=False, hooks=[HOOK]),
        ],
    )
    found = cli.many({"text": ["rules", "list"], "json": ["rules", "list", "--json"]})
    for result in found.values():
        assert result.returncode == 0, describe(result)
        assert "secret" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    lines = found["text"].stdout.splitlines()
    assert lines[0].split() == [
        "RULE",
        "ON",
        "DELETES",
        "CHUNK",
        "LAST",
        "TASK",
        "STATUS",
        "DELETED",
        "WHEN",
    ]
    (first,) = [line for line in lines if line.startswith("old_closed ")]
    (second,) = [line for line in lines if line.startswith("elsewhere ")]
    assert first.split()[1] == "yes" and DELETES in first and "never run" in first
    assert second.split()[1] == "no" and "(1 = 1)" in second and "never run" in second

    rows = json.loads(found["json"].stdout)
    assert rows == [
        {
            "name": "old_closed",
            "enabled": True,
            "database": app,
            "table": "tickets",
            "deletes": DELETES,
            "also_delete": CHILDREN,
            "chunk_size": 50,
            "hooks": [],
            "last_task": None,
        },
        {
            "name": "elsewhere",
            "enabled": False,
            "database": DOWN_MASKED,
            "table": "tickets",
            "deletes": "rows of tickets where (1 = 1)",
            "also_delete": [],
            "chunk_size": 1000,
            "hooks": [HOOK],
            "last_task": None,
        },
    ]
    assert not (tmp_path / "app.db").exists(), "list must not open the rule's database"


# -- rules preview ---------------------------------------------------------------------


def test_rules_preview_counts_and_samples_and_deletes_nothing(bgx: Bgx, tmp_path: Path) -> None:
    app = f"sqlite:///{tmp_path / 'app.db'}"
    fill_app(app, old=1500, recent=300)
    matching = sorted(closed_and_old(app))
    assert 100 < len(matching) < 1500
    before = appdb.rows(app)
    cli = Cli(
        bgx,
        tmp_path,
        [old_closed("old_closed", app), where_rule("none", app, "status = 'no such status'")],
    )
    found = cli.many(
        {
            "text": ["rules", "preview", "old_closed"],
            "json": ["rules", "preview", "old_closed", "--json"],
            "sample": ["rules", "preview", "old_closed", "--json", "--sample", "3"],
            "none": ["rules", "preview", "none"],
            "none-json": ["rules", "preview", "none", "--json"],
        }
    )
    for result in found.values():
        assert result.returncode == 0, describe(result)
        assert result.stderr == "", describe(result)

    first = ", ".join(map(str, matching[:10]))
    text = found["text"].stdout.splitlines()
    assert text[:6] == [
        f"rule old_closed: {DELETES}",
        f"  database: {app}",
        f"  would delete {len(matching):,} row(s) now, id from {matching[0]} to {matching[-1]}",
        f"  first 10 id: {first}, ...",
        "  and their rows in ticket_comments.ticket_id, ticket_links.ticket_id",
        "  each chunk deletes with:",
    ], describe(found["text"])
    # the statements as SQLite runs them, the rule's condition in parentheses
    assert [line for line in text if line.startswith("    DELETE")] == [
        "    DELETE FROM ticket_comments WHERE ticket_comments.ticket_id IN (SELECT tickets.id ",
        "    DELETE FROM ticket_links WHERE ticket_links.ticket_id IN (SELECT tickets.id ",
        f"    DELETE FROM tickets WHERE {RANGE_AND_RULE}",
    ]
    assert text.count(f"    WHERE {RANGE_AND_RULE})") == 2
    assert re.fullmatch(
        r"  with bgtaskex_cutoff = '[-0-9]{10} [:.0-9]+', status = 'closed', "
        r"and the chunk's key range in bgtaskex_after, bgtaskex_high",
        text[-1],
    ), text[-1]
    expected = {
        "rule": "old_closed",
        "database": app,
        "table": "tickets",
        "key": "id",
        "deletes": DELETES,
        "count": len(matching),
        "low": matching[0],
        "high": matching[-1],
        "sample": matching[:10],
    }
    shown = json.loads(found["json"].stdout)
    sql, values = shown.pop("sql"), shown.pop("values")
    assert shown == expected
    assert [s["statement"] for s in sql] == [
        "check",
        "count",
        "keys",
        "lock",
        *["delete"] * 3,
        "recount",
    ]
    assert all("AND (status = :status)" in s["sql"] for s in sql), sql
    cutoff = datetime.fromisoformat(values.pop("bgtaskex_cutoff"))
    assert abs(cutoff - (utcnow() - timedelta(days=30))) < timedelta(minutes=5)
    assert values == {"status": "closed"}
    sampled = json.loads(found["sample"].stdout)
    assert {**sampled, "sql": None, "values": None} == {
        **expected,
        "sample": matching[:3],
        "sql": None,
        "values": None,
    }
    assert found["none"].stdout.splitlines()[:3] == [
        "rule none: rows of tickets where (status = 'no such status')",
        f"  database: {app}",
        "  would delete no row now",
    ]
    none = json.loads(found["none-json"].stdout)
    assert (none["count"], none["low"], none["high"], none["sample"]) == (0, None, None, [])

    assert appdb.rows(app) == before, "preview deleted something"
    assert own_task_count(cli) == 0, "preview queued something"


# -- rules run -------------------------------------------------------------------------


def test_rules_run_queues_once_and_refuses_bad_names_tables_and_databases(
    bgx: Bgx, tmp_path: Path
) -> None:
    app = f"sqlite:///{tmp_path / 'app.db'}"
    fill_app(app, old=200)
    cli = Cli(
        bgx,
        tmp_path,
        [
            old_closed("a", app),
            where_rule("b", app, "status = 'archived'"),
            where_rule("c", app, "status = 'open'", enabled=False),
            where_rule("ghost", app, "1 = 1", table="no_such_table", enabled=False),
            where_rule("down", DOWN_URL, "1 = 1", enabled=False),
        ],
    )
    task_a = cli.queue("a")
    found = cli.many(
        {
            "again": ["rules", "run", "a"],
            "all": ["rules", "run", "--all"],
            "neither": ["rules", "run"],
            "unknown": ["rules", "run", "c", "nope"],
            "ghost": ["rules", "run", "ghost"],
            "down": ["rules", "run", "down"],
            "preview-ghost": ["rules", "preview", "ghost"],
            "preview-down": ["rules", "preview", "down"],
        }
    )
    already = f"rule a: task {task_a} is already queued or running; not queued again"
    assert found["again"].stdout == already + "\n", describe(found["again"])
    every = found["all"].stdout.splitlines()
    assert every[0] == already, describe(found["all"])
    match = re.fullmatch(r"rule b: queued task (\d+) on queue retention", every[1])
    assert match and len(every) == 2, describe(found["all"])
    one_error_line(found["neither"], 2, "--all")
    one_error_line(found["unknown"], 2, "'nope'")
    for key in ("ghost", "preview-ghost"):
        one_error_line(found[key], 2, "'ghost'", "'no_such_table'")
    for key in ("down", "preview-down"):
        line = one_error_line(found[key], 4, "'down'", DOWN_MASKED)
        assert "secret" not in line
    tasks = {t["name"]: (t["id"], t["queue"], t["status"]) for t in cli.tasks()}
    assert tasks == {
        "retention:a": (task_a, "retention", "created"),
        "retention:b": (int(match[1]), "retention", "created"),
    }, "one walk per rule, of the enabled rules, and none by a refused command"

    disabled = cli.ok("rules", "run", "c", "--queue", "elsewhere").stdout
    assert re.fullmatch(
        r"rule c: queued task \d+ on queue elsewhere \(the rule is disabled\)\n", disabled
    )


def test_rules_run_and_preview_refuse_a_where_the_database_rejects(
    bgx: Bgx, tmp_path: Path, app_url: str
) -> None:
    """Checked on the database itself: exit 2 naming the rule (not 4, "unreachable"),
    nothing queued."""
    fill_app(app_url, old=50)
    cli = Cli(
        bgx,
        tmp_path,
        [
            where_rule("column", app_url, "no_such_column = 1"),
            where_rule("syntax", app_url, "status = = 'closed'"),
        ],
    )
    found = cli.many(
        {
            f"{command} {name}": ["rules", command, name]
            for command in ("run", "preview")
            for name in ("column", "syntax")
        }
    )
    for key, result in found.items():
        name = key.split()[1]
        line = one_error_line(result, 2, f"retention rule '{name}'")
        if name == "column":
            assert "no_such_column" in line
    assert own_task_count(cli) == 0


# -- config errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({}, "give 'date_column' + 'older_than' or 'where'"),
        ({"date_column": "created_at"}, "give 'date_column' and 'older_than' together"),
        ({"where": "1 = 1", "chunk_size": 0}, "'chunk_size' must be a whole number"),
    ],
    ids=["no-option", "date-without-age", "chunk-size"],
)
def test_a_bad_rule_stops_every_command_with_one_line(
    bgx: Bgx, tmp_path: Path, body: dict[str, Any], problem: str
) -> None:
    cli = Cli(
        bgx,
        tmp_path,
        [
            where_rule("fine", "sqlite:///unused.db", "1 = 1"),
            {"name": "vague", "table": "tickets", **body},
        ],
    )
    commands = {
        "rules list": ["rules", "list"],
        "rules preview": ["rules", "preview", "fine"],
        "rules run": ["rules", "run", "--all"],
        "list": ["list"],
        "run-once": ["run-once"],
        "processes": ["processes", "--json"],
    }
    if body:
        commands = {"rules list": commands["rules list"], "run-once": commands["run-once"]}
    for result in cli.many(commands).values():
        one_error_line(result, 2, "retention rule 'vague'", problem)
    assert not cli.own_db.exists(), "a command went on with a bad config"


# -- the path a user follows -----------------------------------------------------------


def test_a_walk_queued_on_default_is_done_by_plain_run_once_in_several_runs(
    bgx: Bgx, tmp_path: Path
) -> None:
    app = f"sqlite:///{tmp_path / 'app.db'}"
    fill_app(app, old=3000, recent=600, seed=5)
    matching = closed_and_old(app)
    before = appdb.rows(app)
    cli = Cli(
        bgx,
        tmp_path,
        [
            old_closed("old_closed", app, chunk_size=10),
            where_rule("elsewhere", DOWN_URL, "1 = 1", enabled=False),
        ],
    )
    task_id = cli.queue("old_closed", "default")

    # The first run starts the walk and runs out of its 0.2 s budget.
    first = summary(cli.ok("run-once", "--max-execution-time", "0.2"))
    assert (first["paused"], first["finished"]) == (1, 0)
    params = walk_params(cli, task_id)
    assert params["total"] == len(matching)
    assert (params["low"], params["high"]) == (min(matching), max(matching))
    # The walk may or may not delete a chunk within 0.2 s (a loaded machine spends it
    # on the walk's first reads); it is paused with its range set, not finished.
    assert 0 <= params["deleted"] < len(matching)
    gone = consistent(app, before, matching)
    assert len(gone) == params["deleted"]
    # Rows added after the walk began lie past its range: they are left for the next walk.
    appdb.fill(app, 400, seed=9, start=utcnow() - timedelta(days=40), days=300)
    added = closed_and_old(app) - matching
    assert added and min(added) > params["high"]

    _, task = cli.run_until_finished(task_id, "--max-execution-time", "0.2", most=30)
    params = task["actions"][0]["params"]
    assert params["deleted"] == params["total"] == len(matching)
    assert (params["skipped"], params["skipped_count"]) == ([], 0)
    assert consistent(app, before, matching) == matching
    assert closed_and_old(app) == added

    found = cli.many({"text": ["rules", "list"], "json": ["rules", "list", "--json"]})
    assert all("secret" not in r.stdout + r.stderr for r in found.values())
    (line,) = [line for line in found["text"].stdout.splitlines() if line.startswith("old_closed ")]
    assert "finished" in line and f"{len(matching)}/{len(matching)}" in line
    (other,) = [line for line in found["text"].stdout.splitlines() if line.startswith("elsewhere ")]
    assert "never run" in other
    walked, elsewhere = json.loads(found["json"].stdout)
    last = walked["last_task"]
    assert (last["id"], last["status"], last["deleted"], last["total"], last["skipped"]) == (
        task_id,
        "finished",
        len(matching),
        len(matching),
        0,
    )
    assert last["ended_at"] is not None
    assert (elsewhere["database"], elsewhere["last_task"]) == (DOWN_MASKED, None)


# -- the retention process -------------------------------------------------------------


def test_the_retention_process_plans_and_walks_and_plain_run_once_leaves_its_queue(
    bgx: Bgx, tmp_path: Path
) -> None:
    app = f"sqlite:///{tmp_path / 'app.db'}"
    fill_app(app, old=600, recent=100, seed=7)
    closed = closed_and_old(app)
    archived = appdb.ids_where(app, "status = 'archived'")
    opened = appdb.ids_where(app, "status = 'open'")
    before = appdb.rows(app)
    cli = Cli(
        bgx,
        tmp_path,
        [
            old_closed("a", app, chunk_size=100),
            where_rule("b", app, "status = 'archived'", chunk_size=100, also_delete=CHILDREN),
            where_rule("c", app, "status = 'open'", enabled=False, also_delete=CHILDREN),
        ],
        processes=[{"name": "default", "every": "60s"}, {"name": "retention", "every": "60s"}],
    )
    processes = {p["name"]: p for p in cli.json("processes")}
    assert set(processes) == {"default", "retention"}
    assert processes["default"]["queues"] is None
    assert processes["default"]["exclude_queues"] == ["retention"]
    retention = processes["retention"]
    assert (retention["queues"], retention["window"], retention["callable"]) == (
        ["retention"],
        None,
        PLANNER,
    )
    assert retention["every"] == 60.0

    # The process's planner queues one walk per enabled rule, and the same run walks them.
    counts = summary(cli.ok("run-once", "--process", "retention"))
    assert (counts["finished"], counts["failed"]) == (2, 0)
    tasks = {t["name"]: t for t in cli.tasks()}
    assert set(tasks) == {"retention:a", "retention:b"}
    assert all(t["queue"] == "retention" and t["status"] == "finished" for t in tasks.values())
    assert consistent(app, before, closed | archived) == closed | archived
    assert appdb.ids_where(app, "status = 'open'") == opened

    # Once a day without a window: the next run of the process queues (and runs) nothing.
    counts = summary(cli.ok("run-once", "--process", "retention"))
    assert (counts["finished"], counts["actions"]) == (0, 0)

    # A walk queued on the retention queue is left alone by plain run-once...
    appdb.fill(app, 200, seed=8, start=utcnow() - timedelta(days=40), days=300)
    more = closed_and_old(app)
    assert more
    walk = cli.queue("a")
    assert cli.ok("run-once").stdout.startswith("nothing due")
    other = cli.queue("b", "default")
    counts = summary(cli.ok("run-once"))
    assert counts["finished"] == 1
    statuses = {t["id"]: (t["queue"], t["status"]) for t in cli.tasks()}
    assert statuses[other] == ("default", "finished")
    assert statuses[walk] == ("retention", "created")
    assert len(statuses) == 4
    assert closed_and_old(app) == more
    # ...and done by the process.
    counts = summary(cli.ok("run-once", "--process", "retention"))
    assert counts["finished"] == 1
    assert own_status(cli, walk) == "finished"
    assert closed_and_old(app) == set()
    assert appdb.orphans(app) == 0


# -- kill -9 in the middle of a chunk ------------------------------------------------------


def _server(url: str) -> sqlalchemy.Engine:
    return sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")


def _add_slow_trigger(url: str, victim: int) -> None:
    """Deleting ticket `victim` sleeps a minute, inside the DELETE (and its transaction)."""
    engine = _server(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                # The server notices a client that died during a query (PostgreSQL 14+).
                name = conn.exec_driver_sql("SELECT current_database()").scalar_one()
                conn.exec_driver_sql(
                    f"ALTER DATABASE {name} SET client_connection_check_interval = '100ms'"
                )
                conn.exec_driver_sql(
                    f"CREATE FUNCTION {SLOW_TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS "
                    f"$fn$ BEGIN IF OLD.id = {victim} THEN PERFORM pg_sleep(60); END IF; "
                    "RETURN OLD; END $fn$"
                )
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {SLOW_TRIGGER} BEFORE DELETE ON tickets "
                    f"FOR EACH ROW EXECUTE FUNCTION {SLOW_TRIGGER}()"
                )
            else:
                conn.exec_driver_sql(
                    f"CREATE TRIGGER {SLOW_TRIGGER} BEFORE DELETE ON tickets FOR EACH ROW "
                    f"BEGIN IF OLD.id = {victim} THEN DO SLEEP(60); END IF; END"
                )
    finally:
        engine.dispose()


def _sleeping_delete(url: str) -> int | None:
    """The server session sleeping in the trigger, inside `DELETE FROM tickets`."""
    engine = _server(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                query = sqlalchemy.text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND wait_event = 'PgSleep' AND query LIKE :delete"
                )
                found = conn.execute(query, {"delete": "DELETE FROM tickets %"}).scalars().all()
            else:
                # MariaDB shows the trigger's statement being run for the DELETE.
                query = sqlalchemy.text(
                    "SELECT id FROM information_schema.processlist WHERE db = DATABASE() "
                    "AND state = 'User sleep' AND info = 'DO SLEEP(60)'"
                )
                found = conn.execute(query).scalars().all()
    finally:
        engine.dispose()
    assert len(found) <= 1, found
    return int(found[0]) if found else None


def _end_of_session(url: str, session: int) -> None:
    """Wait until the killed client's server session is gone (its transaction rolled
    back). PostgreSQL notices by itself (client_connection_check_interval); MariaDB does
    not while SLEEP() runs, so the test ends the session as the server would at the end
    of the sleep, when it finds the client gone."""
    engine = _server(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                alive = sqlalchemy.text("SELECT count(*) FROM pg_stat_activity WHERE pid = :s")
            else:
                alive = sqlalchemy.text(
                    "SELECT count(*) FROM information_schema.processlist WHERE id = :s"
                )
                with contextlib.suppress(sqlalchemy.exc.DBAPIError):  # already gone
                    conn.exec_driver_sql(f"KILL {session}")
            wait_until(
                lambda: conn.execute(alive, {"s": session}).scalar_one() == 0,
                "the killed client's server session to end",
            )
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"DROP TRIGGER {SLOW_TRIGGER} ON tickets")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER {SLOW_TRIGGER}")
    finally:
        engine.dispose()


@contextlib.contextmanager
def _sqlite_reader(path: Path) -> Iterator[set[int]]:
    """An open read transaction on the SQLite file (rollback journal): a writer may
    change pages but cannot commit until it ends. Yields the tickets it sees."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN")
        yield {row[0] for row in conn.execute("SELECT id FROM tickets")}
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def test_kill_9_in_the_middle_of_a_chunk_then_the_walk_finishes(
    bgx: Bgx, tmp_path: Path, app_url: str
) -> None:
    chunk = 20
    fill_app(app_url, old=4000, recent=400, seed=11)
    matching = closed_and_old(app_url)
    ordered = sorted(matching)
    before = appdb.rows(app_url)
    cli = Cli(bgx, tmp_path, [old_closed("old_closed", app_url, chunk_size=chunk)])
    task_id = cli.queue("old_closed", "default")
    dialect = sqlalchemy.make_url(app_url).get_backend_name()

    if dialect == "sqlite":
        db = Path(sqlalchemy.make_url(app_url).database or "")
        journal = db.with_name(db.name + "-journal")
        proc = cli.start("run-once", "--max-execution-time", "30")
        start = ticket_count(db)
        wait_until(lambda: ticket_count(db) < start, "a first chunk", proc=proc)
        with _sqlite_reader(db) as seen:
            committed = before.tickets - seen
            # The next chunk writes its rollback journal, then waits for this reader.
            wait_until(journal.exists, "a chunk to begin writing", proc=proc)
            kill_group(proc)
            assert journal.stat().st_size > 0, "the killed chunk left its journal"
        assert 0 < len(committed) < len(matching)
        assert len(committed) % chunk == 0
    else:
        victim = ordered[3 * chunk + 5]  # in the fourth chunk
        _add_slow_trigger(app_url, victim)
        proc = cli.start("run-once", "--max-execution-time", "30")
        wait_until(lambda: _sleeping_delete(app_url) is not None, "the DELETE to sleep", proc=proc)
        session = _sleeping_delete(app_url)
        assert session is not None
        committed = before.tickets - appdb.rows(app_url).tickets
        kill_group(proc)
        _end_of_session(app_url, session)
        assert committed == set(ordered[: 3 * chunk])
        assert victim in appdb.rows(app_url).tickets

    # The chunk in flight was rolled back: only the committed chunks' rows are gone.
    assert consistent(app_url, before, matching) == committed
    assert own_status(cli, task_id) == "running"  # execute died

    _, task = cli.run_until_finished(task_id)
    (action,) = task["actions"]
    assert (action["status"], action["attempts"]) == ("done", 1)
    params = action["params"]
    assert params["deleted"] == params["total"] == len(matching)
    assert params["skipped_count"] == 0
    assert consistent(app_url, before, matching) == matching


def deleting(proc: subprocess.Popen[str], log: Path) -> Callable[[], bool]:
    """Whether the run ended, or its hook was called twice (so at least one of its own
    chunks committed: a crash before needed only one call to settle)."""
    return lambda: proc.poll() is not None or sum(c["pid"] == proc.pid for c in calls(log)) >= 2


def test_sqlite_kills_at_random_moments_with_hooks(bgx: Bgx, tmp_path: Path) -> None:
    """Seeded random kills of `run-once` while it walks, each 10-120 ms after the run was
    seen deleting (two hook calls of that run); after every kill the application database
    is consistent and the hooks heard of deleted rows only. Kills go on until at least
    `middle_wanted` of them landed inside a chunk's transaction (they left its rollback
    journal behind), or the walk ended by itself after `kills_wanted` kills: on a loaded
    machine few kills land there, and test_kill_9_in_the_middle_of_a_chunk makes sure of
    one. Then the walk finishes, every deleted row told to the hooks."""
    kills_wanted, middle_wanted, kills_max = 6, 1, 20
    app = tmp_path / "app.db"
    journal = tmp_path / "app.db-journal"
    url = f"sqlite:///{app}"
    fill_app(url, old=16000, seed=13)
    matching = closed_and_old(url)
    before = appdb.rows(url)
    log = tmp_path / "hooks.jsonl"
    bgx.env[LOG_ENV] = str(log)
    cli = Cli(bgx, tmp_path, [old_closed("old_closed", url, chunk_size=16, hooks=[HOOK])])
    task_id = cli.queue("old_closed", "default")
    rng = random.Random(20261128)

    kills = middle = 0
    while kills < kills_wanted or middle < middle_wanted:
        assert kills < kills_max, f"only {middle} of {kills} kills landed inside a chunk"
        proc = cli.start("run-once", "--max-execution-time", "30")
        wait_until(deleting(proc, log), "the run to delete")
        if proc.poll() is None:
            time.sleep(rng.uniform(0.01, 0.12))  # the random moment of the kill
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        if proc.returncode == 0 and kills >= kills_wanted:
            break  # the walk ended by itself before a kill landed inside a chunk
        assert proc.returncode == -signal.SIGKILL, f"the walk ended after {kills} kills"
        kills += 1
        middle += journal.exists() and journal.stat().st_size > 0
        gone = consistent(url, before, matching)  # (opening it rolls back a hot journal)
        heard = {k for c in calls(log) for k in c["keys"]}
        assert heard <= gone, f"hooks told of rows still there: {sorted(heard - gone)[:10]}"
        assert own_status(cli, task_id) == "running"

    _, task = cli.run_until_finished(task_id)
    params = task["actions"][0]["params"]
    assert params["deleted"] == params["total"] == len(matching)
    assert params["skipped_count"] == 0
    assert consistent(url, before, matching) == matching
    recorded = calls(log)
    assert {c["table"] for c in recorded} == {"tickets"}
    assert {k for c in recorded for k in c["keys"]} == matching, "a deleted row was never told"


def kill_after_a_commit(cli: Cli, app: Path, proc: subprocess.Popen[str]) -> None:
    """SIGKILL the run right after one of its chunks committed on the SQLite file `app`
    and before the walk saved anything more: a reader holds the chunk's commit back until
    the test holds bgtaskex's own database, where the walk saves next."""
    journal = app.with_name(app.name + "-journal")
    start = ticket_count(app)
    wait_until(lambda: ticket_count(app) < start, "a first chunk", proc=proc)
    own = sqlite3.connect(cli.own_db, isolation_level=None, timeout=30)
    try:
        with _sqlite_reader(app) as seen:
            # A chunk has begun writing (after its write-ahead) and waits for this reader
            # to commit; meanwhile take bgtaskex's own database.
            wait_until(journal.exists, "a chunk to begin writing", proc=proc)
            own.execute("BEGIN IMMEDIATE")
        # The reader is gone: the chunk commits, then waits to save.
        wait_until(lambda: not journal.exists(), "the chunk to commit", proc=proc)
        assert ticket_count(app) < len(seen), "the chunk did not commit"
        kill_group(proc)
    finally:
        own.execute("ROLLBACK")
        own.close()


@pytest.mark.parametrize("hooks", [False, True], ids=["no-hooks", "hooks"])
def test_kill_9_between_a_chunk_commit_and_its_save_still_counts_it(
    bgx: Bgx, tmp_path: Path, hooks: bool
) -> None:
    """The run is killed right after a chunk committed and before the walk saved its
    cursor: the next run still counts that chunk (and tells the hooks)."""
    app = tmp_path / "app.db"
    url = f"sqlite:///{app}"
    fill_app(url, old=3000, seed=17)
    matching = closed_and_old(url)
    before = appdb.rows(url)
    log = tmp_path / "hooks.jsonl"
    bgx.env[LOG_ENV] = str(log)
    rule = old_closed("old_closed", url, chunk_size=10, **({"hooks": [HOOK]} if hooks else {}))
    cli = Cli(bgx, tmp_path, [rule])
    task_id = cli.queue("old_closed", "default")
    kill_after_a_commit(cli, app, cli.start("run-once", "--max-execution-time", "30"))
    assert consistent(url, before, matching)

    _, task = cli.run_until_finished(task_id)
    assert consistent(url, before, matching) == matching
    params = task["actions"][0]["params"]
    assert params["deleted"] == params["total"] == len(matching)
    assert params["skipped_count"] == 0
    if hooks:
        told = {k for c in calls(log) for k in c["keys"]}
        assert told == matching, "the killed chunk's rows were never told to the hooks"
    else:
        assert calls(log) == []


def test_kill_9_after_a_one_row_chunk_commits_skips_no_row(bgx: Bgx, tmp_path: Path) -> None:
    """chunk_size = 1: killed after a chunk committed, the next run must not skip the
    next row, which no run ever tried to delete."""
    app = tmp_path / "app.db"
    url = f"sqlite:///{app}"
    fill_app(url, old=400, seed=23)
    matching = closed_and_old(url)
    before = appdb.rows(url)
    cli = Cli(bgx, tmp_path, [old_closed("old_closed", url, chunk_size=1)])
    task_id = cli.queue("old_closed", "default")
    kill_after_a_commit(cli, app, cli.start("run-once", "--max-execution-time", "30"))

    _, task = cli.run_until_finished(task_id)
    params = task["actions"][0]["params"]
    assert params["skipped"] == []
    assert params["deleted"] == params["total"] == len(matching)
    assert consistent(url, before, matching) == matching


# -- passwords of a reachable rule database --------------------------------------------


@pytest.mark.postgres
def test_a_reachable_database_password_never_shows(
    bgx: Bgx, tmp_path: Path, pg_database_url: str
) -> None:
    """The rule's URL has a password (the server's own, or one a trust server ignores):
    preview, run, the walk's logs, show and list never print it."""
    url = sqlalchemy.make_url(pg_database_url)
    secret = url.password or "s3cret-pw"
    with_password = url.set(password=secret).render_as_string(hide_password=False)
    masked = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", with_password)
    assert masked != with_password
    fill_app(pg_database_url, old=300, seed=19)
    matching = closed_and_old(pg_database_url)
    cli = Cli(bgx, tmp_path, [old_closed("pg", with_password, chunk_size=25)])
    task_id = cli.queue("pg", "default")
    walk = cli.ok("--log-level", "DEBUG", "run-once")
    found = cli.many(
        {
            "preview": ["rules", "preview", "pg"],
            "show": ["show", task_id, "--json", "--verbose"],
            "list": ["rules", "list"],
            "list-json": ["rules", "list", "--json"],
            "preview-json": ["rules", "preview", "pg", "--json"],
        }
    )
    for result in [walk, *found.values()]:
        assert result.returncode == 0, describe(result)
        assert secret not in result.stdout + result.stderr, describe(result)
    assert f"  database: {masked}" in found["preview"].stdout.splitlines()
    assert json.loads(found["list-json"].stdout)[0]["database"] == masked
    assert json.loads(found["preview-json"].stdout)["database"] == masked
    assert closed_and_old(pg_database_url) == set()
    task = json.loads(found["show"].stdout)
    assert task["status"] == "finished"
    assert task["actions"][0]["params"]["deleted"] == len(matching)
