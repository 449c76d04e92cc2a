"""Queues an operator can pause (#15, part 3): `Client.pause / resume / queues`, and the
CLI's `pause`, `resume`, `queues`, with `list`, `stats`, Prometheus and `check`.

A paused queue's tasks are passed over by every pick of a task (the run's due query,
the claims of workers without a lock), by the daemon's poll for interactive tasks, by
`next_due_at` and by the idle probe of `run-once`; the other queues run on. The chain
that a pause catches mid-run is the acceptance test's (tests/acceptance/test_pauses.py:
a real subprocess), as is the daemon.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from bgtaskex import tables as t
from bgtaskex.client import Client, connect
from bgtaskex.concurrency import Concurrency
from bgtaskex.config import Settings
from bgtaskex.exceptions import InvalidState, UsageError
from bgtaskex.models import TaskStatus
from bgtaskex.store.probe import sqlite_idle, sqlite_idle_until
from tests.conftest import TEST_RETRY_DELAY
from tests.support.cli import CliResult, run_cli

NOOP = "tests.scripted:Noop"


def _status(client: Client, *task_ids: int) -> list[TaskStatus]:
    return [client.get(task_id).status for task_id in task_ids]


def test_a_paused_queue_is_passed_over_until_resumed(client: Client) -> None:
    """On each backend: the run, a claim, the daemon's poll, has_due and next_due_at pass
    over the paused queue; the other queue runs; resume gives its tasks back."""
    store = client.store
    cron = client.enqueue("r-cron", [NOOP], queue="reports")
    interactive = client.enqueue("r-now", [NOOP], queue="reports", type="interactive")
    later = client.enqueue("r-later", [NOOP], queue="reports", not_before=timedelta(hours=1))
    other = client.enqueue("d", [NOOP])
    _pause, new = client.pause("reports", "warehouse maintenance")
    assert new
    assert store.waiting_interactive_queues() == []
    assert client.next_due_at() is None  # the delayed task is in the paused queue
    summary = client.run_once()
    assert (summary.finished, summary.paused) == (1, 0), summary.line()
    assert _status(client, other, cron, interactive) == [
        TaskStatus.FINISHED,
        TaskStatus.CREATED,
        TaskStatus.CREATED,
    ]
    assert store.next_task() is None
    assert store.claim("w", "r" * 32, 30) is None
    assert not store.has_due_tasks()
    assert store.queue_paused("reports") and not store.queue_paused("default")

    client.resume("reports")
    assert not store.queue_paused("reports")
    assert store.waiting_interactive_queues() == ["reports"]
    assert client.next_due_at() == client.get(later).not_before
    assert client.run_once().finished == 2
    assert _status(client, cron, interactive) == [TaskStatus.FINISHED] * 2


@pytest.fixture
def shared(server_url: str, tmp_path: Path) -> Iterator[Client]:
    """Workers without a run lock, claiming tasks (PostgreSQL, MariaDB)."""
    settings = Settings(
        database_url=server_url,
        imports=("tests.scripted",),
        retry_delay=TEST_RETRY_DELAY,
        concurrency=Concurrency(lock="none", workers=2),  # type: ignore[arg-type]
    )
    with connect(settings=settings) as opened:
        yield opened


def test_workers_without_a_lock_pass_over_a_paused_queue(shared: Client) -> None:
    paused = [shared.enqueue(f"r{i}", [NOOP], queue="reports") for i in range(3)]
    others = [shared.enqueue(f"d{i}", [NOOP]) for i in range(3)]
    shared.pause("reports")
    assert shared.run_once().finished == 3
    assert _status(shared, *others) == [TaskStatus.FINISHED] * 3
    assert _status(shared, *paused) == [TaskStatus.CREATED] * 3
    shared.resume("reports")
    assert shared.run_once().finished == 3
    assert _status(shared, *paused) == [TaskStatus.FINISHED] * 3


def test_the_idle_probe_passes_over_a_paused_queue(lite: Client) -> None:
    """`run-once` on an idle SQLite file ends without a full run when only paused queues
    hold due tasks, and tells when the next task of a queue not paused is due."""
    url = lite.settings.database_url
    assert url is not None
    lite.enqueue("r", [NOOP], queue="reports")
    later = lite.enqueue("d", [NOOP], not_before=timedelta(hours=1))
    lite.enqueue("r-later", [NOOP], queue="reports", not_before=timedelta(minutes=1))
    assert not sqlite_idle(url)
    lite.pause("reports")
    assert sqlite_idle_until(url) == (True, lite.get(later).not_before)
    lite.resume("reports")
    assert not sqlite_idle(url)


def test_pause_is_idempotent_and_resume_refuses_a_queue_not_paused(client: Client) -> None:
    first, new = client.pause(" reports ", "disk\nfull,  see postgresql://u:hunter2@db/x")
    assert new and first.queue == "reports", first
    assert first.reason is not None and "\n" not in first.reason and "hunter2" not in first.reason
    assert first.reason.startswith("disk full, see postgresql://u:"), first.reason
    assert first.paused_by and "@" in first.paused_by
    again, new = client.pause("reports")  # no reason given: the reason is kept
    assert not new and again == first
    third, new = client.pause("reports", "another reason")
    assert not new and third.reason == "another reason" and third.paused_at == first.paused_at
    assert client.paused_queues() == [third]
    assert client.resume("reports") == third
    assert client.paused_queues() == []
    with pytest.raises(InvalidState, match=r"queue 'reports' is not paused \(no queue is paused"):
        client.resume("reports")
    client.pause("emails")
    with pytest.raises(InvalidState, match=r"'reprots' is not paused \(paused: emails\)"):
        client.resume("reprots")
    for bad in ("", "   ", "q" * 101, "\ud800", 7):
        with pytest.raises(UsageError, match="queue must be"):
            client.pause(bad)  # type: ignore[arg-type]
        with pytest.raises(UsageError, match="queue must be"):
            client.resume(bad)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="at most 500 characters"):
        client.pause("q", "x" * 501)
    assert client.pause("q", "   ")[0].reason is None


def _set_task(client: Client, task_id: int, status: str) -> None:
    """Put a task in `status` as a run would have left it (run_order, ended_at)."""
    from bgtaskex.models import run_order

    ended = status in ("finished", "failed", "cancelled")
    with client.store._engine.begin() as conn:
        conn.execute(
            update(t.tasks)
            .where(t.tasks.c.id == task_id)
            .values(
                status=status,
                run_order=run_order("cron", status),
                ended_at=datetime.now(UTC) if ended else None,
            )
        )


def _cli(client: Client, *args: object) -> CliResult:
    url = client.settings.database_url
    return run_cli("--database-url", url, "--import", "tests.scripted", *args)


def test_queues_json(client: Client, isolated: None) -> None:
    """`queues --json`: every queue with tasks or a pause, by name, its counts, its
    oldest waiting task (created or paused: not the executing ones) and its pause."""
    running = client.enqueue("r0", [NOOP], queue="reports")
    oldest = client.enqueue("r1", [NOOP], queue="reports")
    client.enqueue("r2", [NOOP], queue="reports")
    failed = client.enqueue("r3", [NOOP], queue="reports")
    done = client.enqueue("e0", [NOOP], queue="emails")
    _set_task(client, running, "running")
    _set_task(client, failed, "failed")
    _set_task(client, done, "finished")
    paused = _cli(client, "pause", "reports", "--reason", "maintenance")
    assert paused.code == 0 and paused.out.startswith("queue reports paused "), paused.describe()
    again = _cli(client, "pause", "reports")
    assert again.out.startswith("already queue reports paused"), again.describe()
    assert "(maintenance)" in again.out, again.describe()
    assert _cli(client, "pause", "imports").code == 0  # no task in it yet
    found = _cli(client, "queues", "--json").json()
    assert [q["queue"] for q in found] == ["emails", "imports", "reports"]
    emails, imports, reports = found
    assert emails == {
        "queue": "emails",
        "waiting": 0,
        "running": 0,
        "failed": 0,
        "oldest_waiting_id": None,
        "oldest_waiting_at": None,
        "paused": False,
        "paused_at": None,
        "reason": None,
        "paused_by": None,
    }
    assert (imports["waiting"], imports["paused"], imports["reason"]) == (0, True, None)
    assert {k: reports[k] for k in ("waiting", "running", "failed", "oldest_waiting_id")} == {
        "waiting": 2,
        "running": 1,
        "failed": 1,
        "oldest_waiting_id": oldest,
    }
    created = client.get(oldest).created_at
    assert reports["oldest_waiting_at"] == created.isoformat().replace("+00:00", "Z")
    assert reports["paused"] and reports["reason"] == "maintenance" and "@" in reports["paused_by"]
    assert reports["paused_at"].endswith("Z")
    table = _cli(client, "queues")
    assert table.code == 0 and "maintenance" in table.out, table.describe()
    assert [line.split()[0] for line in table.lines()[1:]] == ["emails", "imports", "reports"]


def test_cli_shows_the_pause_everywhere(lite: Client, isolated: None) -> None:
    """`list` (a line under the table), `stats` (text and JSON), Prometheus and `check`
    (a note; a warning once the pause is older than stuck_after) show it; `resume`
    lifts it; bad input is one error line with its exit code."""
    lite.enqueue("r", [NOOP], queue="reports")
    waiting = lite.enqueue("d", [NOOP])
    assert "paused" not in _cli(lite, "list").out
    assert _cli(lite, "pause", "reports", "--reason", "maintenance").code == 0

    listed = _cli(lite, "list")
    notes = [line for line in listed.lines() if line.startswith("queue ")]
    assert len(notes) == 1 and notes[0].startswith("queue reports paused "), listed.describe()
    assert notes[0].endswith("(maintenance): no run takes its tasks"), notes
    assert "paused" not in _cli(lite, "list", "--queue", "default").out

    stats = _cli(lite, "stats")
    assert "queue reports paused" in stats.out, stats.describe()
    paused = _cli(lite, "stats", "--json").json()["paused_queues"]
    assert [(p["queue"], p["reason"]) for p in paused] == [("reports", "maintenance")]
    prometheus = _cli(lite, "stats", "--prometheus").out
    assert 'bgtaskex_queue_paused{queue="reports"} 1.0' in prometheus.splitlines()
    assert 'queue="default"' not in "".join(
        line for line in prometheus.splitlines() if line.startswith("bgtaskex_queue_paused")
    )

    check = _cli(lite, "check")
    assert check.code == 0 and "paused queue(s): reports" in check.out, check.describe()
    with lite.store._engine.begin() as conn:  # paused an hour ago
        conn.execute(
            update(t.queue_pauses).values(paused_at=datetime.now(UTC) - timedelta(hours=1))
        )
    warned = _cli(lite, "check")
    assert warned.code == 1, warned.describe()
    assert warned.out.startswith("BGTASKEX WARNING - 1 queue(s) paused for over 180s: reports")
    assert _cli(lite, "check", "--stuck-after", "2h").code == 0
    with lite.store._engine.begin() as conn:  # every task untouched for an hour
        conn.execute(update(t.tasks).values(updated_at=datetime.now(UTC) - timedelta(hours=1)))
    stuck = _cli(lite, "check").out  # the paused queue's task is not "stuck" too
    assert f"- 1 task(s) stuck, untouched for over 180s (ids {waiting}); " in stuck, stuck

    resumed = _cli(lite, "resume", "reports")
    assert resumed.code == 0 and resumed.out == "queue reports resumed\n", resumed.describe()
    assert "paused" not in _cli(lite, "check").out
    assert "bgtaskex_queue_paused{" not in _cli(lite, "stats", "--prometheus").out
    for args, code in (
        (("resume", "reports"), 5),
        (("pause", ""), 2),
        (("pause", "q", "--reason", "x" * 501), 2),
        (("resume",), 2),
        (("pause", "a\nb"), 2),  # a control character would break the one-line outputs
        (("pause", "nul\x01x"), 2),
        (("pause", "q", "--reason", "\x1b[31mRED\x07"), 2),  # it reached others' terminals
        (("resume", "a\nb"), 2),
        (("enqueue", "t", NOOP, "--queue", "x\ny"), 2),
        (("enqueue", "a\nb", NOOP), 2),
        (("enqueue", "tab\tbed", NOOP), 2),
    ):
        bad = _cli(lite, *args)
        lines = bad.err.strip().splitlines()
        assert bad.code == code and len(lines) == 1, bad.describe()
        assert lines[0].startswith("bgtaskex: error: ") and "Traceback" not in bad.err
    assert [p.queue for p in lite.paused_queues()] == []
    assert len(lite.list_tasks()) == 2
    for bad_name in ("a\nb", "x\x7fy", "c1\x85c1"):
        with pytest.raises(UsageError, match="without control characters"):
            lite.enqueue(bad_name, [NOOP])
        with pytest.raises(UsageError, match="without control characters"):
            lite.enqueue("t", [NOOP], queue=bad_name)
    assert lite.get(lite.enqueue(" t\n", [NOOP], queue="\treports ")).queue == "reports"


def test_resume_wakes_the_daemons_on_postgresql(pg_schema_url: str, tmp_path: Path) -> None:
    """`resume` NOTIFYs the queue, as `enqueue` of an interactive task does: the
    daemon's wake-up thread (LISTENing) hears it at once, not at its next poll."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    from tests.support.cli import wait_until

    settings = Settings(database_url=pg_schema_url, lock_file=str(tmp_path / "run.lock"))
    with connect(settings=settings) as client, ThreadPoolExecutor(1) as pool:
        client.pause("reports")
        heard = pool.submit(lambda: next(iter(client.wake_ups(20.0))))

        def listening() -> bool:
            with client.store._engine.connect() as conn:
                query = (  # this schema's channel: other tests may LISTEN on theirs
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE query = 'LISTEN \"bgtaskex_' || current_schema() || '\"'"
                )
                return bool(conn.execute(text(query)).scalar())

        wait_until(listening, "the LISTEN of the wake-ups")
        client.resume("reports")
        assert heard.result(timeout=10) == "reports"


def test_two_operators_pausing_at_once(server_url: str) -> None:
    """Concurrent pauses of a queue not paused yet: both succeed, exactly one is new
    (the loser's INSERT fails on the primary key: it tries again and finds the pause)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    clients = [connect(settings=Settings(database_url=server_url)) for _ in range(4)]
    try:
        clients[0].paused_queues()  # the schema, before the race
        for round_ in range(5):
            queue = f"q{round_}"
            start = Barrier(len(clients))

            def pause(client: Client, queue: str = queue, start: Barrier = start) -> bool:
                start.wait()
                return client.pause(queue, f"by {id(client)}")[1]

            with ThreadPoolExecutor(len(clients)) as pool:
                news = list(pool.map(pause, clients))
            assert sorted(news) == [False] * (len(clients) - 1) + [True], news
        assert [p.queue for p in clients[0].paused_queues()] == [f"q{i}" for i in range(5)]
    finally:
        for client in clients:
            client.close()


@pytest.mark.parametrize("hook", ["init", "change"])
def test_a_pause_during_a_hook_stops_the_task_before_execute(
    lite: Client, tmp_path: Path, hook: str
) -> None:
    """A pause that comes while init_params or change_params_on_error runs (and is
    older than the pause-check interval when it returns): execute is not called; the
    task is left `paused` with what the hook saved, and execute comes first once the
    queue is resumed (init_params is not called again)."""
    from tests.scripted import calls

    lite.settings = lite.settings._replace(retry_delay=0.0)
    log = str(tmp_path / "calls.jsonl")
    url = lite.settings.database_url
    params = {"url": url, "queue": "reports", "hook": hook, "log": log}
    task = lite.enqueue("t", [("tests.ops_actions:PausesItsQueue", params)], queue="reports")
    if hook == "change":
        assert lite.run_once().errors == 1  # the first execute dies
    before = len(calls(log))
    summary = lite.run_once()
    assert summary.paused == 1 and summary.actions == 0, summary.line()
    assert calls(log)[before:] == [("A", hook)], "execute ran in a paused queue"
    paused = lite.get(task)
    assert paused.status == TaskStatus.PAUSED, paused
    assert paused.actions[0].params["paused_in"] == hook
    message = lite.events(task)[-1].message
    assert message == "queue reports paused before execute of action 1", message

    lite.resume("reports")
    assert lite.run_once().finished == 1
    assert calls(log)[before:] == [("A", hook), ("A", "execute")]
    assert lite.get(task).status == TaskStatus.FINISHED


def test_list_and_enqueue_say_the_queue_is_paused(lite: Client, isolated: None) -> None:
    """A task of a paused queue has the plain state `queue paused (since ..., reason)`
    (kind queue_paused), not `due`; `enqueue` into a paused queue says so on stderr and
    queues the task all the same (exit 0)."""
    assert _cli(lite, "pause", "reports", "--reason", "maintenance").code == 0
    queued = _cli(lite, "enqueue", "r", NOOP, "--queue", "reports")
    assert queued.code == 0 and queued.out.startswith("queued task "), queued.describe()
    notes = queued.err.splitlines()
    assert len(notes) == 1 and notes[0].startswith("note: queue reports is paused (since ")
    assert notes[0].endswith(": maintenance); its tasks wait for bgtaskex resume reports"), (
        queued.describe()
    )
    quiet = _cli(lite, "enqueue", "r2", NOOP, "--queue", "reports", "--quiet")
    assert quiet.code == 0 and quiet.err == "", quiet.describe()
    later = lite.enqueue("r-later", [NOOP], queue="reports", not_before=timedelta(hours=1))
    other = _cli(lite, "enqueue", "d", NOOP)
    assert other.code == 0 and other.err == "", other.describe()

    states = {task["name"]: task["state"] for task in _cli(lite, "list", "--json").json()}
    assert states["d"]["kind"] == "due", states
    for name in ("r", "r2", "r-later"):
        assert states[name]["kind"] == "queue_paused", states
        text = states[name]["text"]
        assert re.fullmatch(r"queue paused \(since \d\d:\d\d:\d\d UTC, maintenance\)", text)
    assert states["r-later"]["at"] is not None  # still delayed once resumed
    assert lite.get(later).not_before is not None
    table = _cli(lite, "list")
    rows = [line for line in table.lines() if " r " in line]
    assert len(rows) == 1 and "queue paused (since" in rows[0], table.describe()

    lite.resume("reports")
    states = {task["name"]: task["state"] for task in _cli(lite, "list", "--json").json()}
    assert (states["r"]["kind"], states["r-later"]["kind"]) == ("due", "delayed"), states
