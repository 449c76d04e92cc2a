"""What one task may cost (issue 12, "Params size"), on every backend: params over
`max_params_bytes` are refused at enqueue (UsageError; exit 2 and one line from the CLI),
and `show` of a task of 100,000 actions reads a page of its actions and events with
their counts instead of the whole chain. The time it takes is in bench/showpage.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update

from bgtaskex import tables as t
from bgtaskex.client import Client, connect
from bgtaskex.config import Settings, params_size
from bgtaskex.exceptions import ParamsTooLarge, UsageError
from bgtaskex.models import TaskStatus
from bgtaskex.render import render_task
from tests.support.cli import run_cli

NOOP = "tests.scripted:Noop"
MIB = 1024 * 1024
CHAIN = 100_000
EVENTS = 2**17


def blob(size: int, char: str = "x") -> dict[str, Any]:
    """Params whose JSON text is exactly `size` bytes."""
    params = {"blob": ""}
    per_char = params_size({"blob": char}) - params_size(params)
    params["blob"] = char * ((size - params_size(params)) // per_char)
    assert params_size(params) == size
    return params


def cli(settings: Settings, *args: str) -> tuple[int, str, str]:
    assert settings.database_url is not None
    result = run_cli("--database-url", settings.database_url, "--import", "tests.scripted", *args)
    return result.code, result.out, result.err


# -- max_params_bytes ------------------------------------------------------------------


def test_params_over_max_params_bytes_are_refused_at_enqueue(client: Client) -> None:
    assert client.settings.max_params_bytes == MIB
    fits = blob(MIB)
    task_id = client.enqueue("fits", [(NOOP, fits)])
    assert client.get(task_id).actions[0].params == fits
    with pytest.raises(UsageError) as refused:
        client.enqueue("too big", [NOOP, (NOOP, blob(MIB + 1))])
    assert isinstance(refused.value, ParamsTooLarge)
    assert str(refused.value) == (
        "params of 'tests.scripted:Noop' are 1,048,577 bytes of JSON, "
        "over max_params_bytes (1,048,576)"
    )
    assert client.count_tasks() == 1  # nothing of the refused task was stored


def test_non_ascii_params_count_their_escapes(settings: Settings) -> None:
    with connect(settings=settings._replace(max_params_bytes=64)) as small:
        small.enqueue("fits", [(NOOP, {"blob": "é" * 8})])  # 12 + 8 x len("\\u00e9")
        with pytest.raises(ParamsTooLarge, match="are 66 bytes of JSON"):
            small.enqueue("over", [(NOOP, {"blob": "é" * 9})])


def test_cli_enqueue_of_oversized_params_is_exit_2_and_one_line(
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task = tmp_path / "task.json"
    task.write_text(
        json.dumps({"name": "big", "actions": [{"ref": NOOP, "params": blob(2 * MIB)}]})
    )
    code, out, err = cli(settings, "enqueue", "--file", str(task))
    assert (code, out) == (2, "")
    assert err == (
        "bgtaskex: error: params of 'tests.scripted:Noop' are 2,097,152 bytes of JSON, "
        "over max_params_bytes (1,048,576)\n"
    )
    monkeypatch.setenv("BGTASKEX_MAX_PARAMS_BYTES", "3MiB")
    code, out, err = cli(settings, "enqueue", "--file", str(task), "-q")
    assert code == 0, err
    monkeypatch.setenv("BGTASKEX_MAX_PARAMS_BYTES", "16")
    code, out, err = cli(settings, "enqueue", "small", NOOP + '={"a": "0123456789"}')
    assert code == 2 and "are 19 bytes of JSON, over max_params_bytes (16)" in err, err
    assert len(err.splitlines()) == 1


# -- show: a page of actions and events ----------------------------------------------------


def make_long_chain(client: Client) -> tuple[int, list[int]]:
    """A task of 100,000 actions, at action 60,000, with 2**17 events. The database
    copies the rows itself (INSERT ... SELECT, doubling them 17 times): enqueuing
    100,000 actions costs seconds of client work on each backend. Returns the task's id
    and the ids of its last 50 events."""
    task_id = client.enqueue("long chain", [(NOOP, {"n": 1})])
    a, e = t.actions.c, t.events.c
    copied = {
        t.actions: ["ref", "status", "attempts", "params", "initial_params", "elapsed"],
        t.events: ["at", "run_id", "old_status", "new_status", "message", "error"],
    }
    with client.store._engine.begin() as conn:
        for step in range(17):
            for table, columns in copied.items():
                c = table.c
                rank = c.rank + 2**step if table is t.actions else c.rank
                rows = select(c.task_id, rank, *(c[n] for n in columns))
                conn.execute(
                    insert(table).from_select(
                        ["task_id", "rank", *columns], rows.where(c.task_id == task_id)
                    )
                )
        conn.execute(delete(t.actions).where(a.task_id == task_id, a.rank > CHAIN))
        current = (a.task_id == task_id) & (a.rank == 60_000)
        conn.execute(update(t.actions).where(current).values(params={"n": 60_000}))
        conn.execute(
            update(t.tasks)
            .where(t.tasks.c.id == task_id)
            .values(current_rank=60_000, status=TaskStatus.PAUSED.value)
        )
        last = (
            conn.execute(select(e.id).where(e.task_id == task_id).order_by(e.id.desc()).limit(50))
            .scalars()
            .all()
        )
    return task_id, sorted(last)


def test_show_of_a_task_of_100000_actions_reads_a_page(client: Client, settings: Settings) -> None:
    task_id, last_events = make_long_chain(client)
    task, count = client.store.get_task_page(task_id, 50)
    assert count == CHAIN
    assert [a.rank for a in task.actions] == [*range(1, 51), 60_000]
    assert task.current_action is not None and task.current_action.params == {"n": 60_000}
    events, event_count = client.store.admin.recent_events(task_id, 50)
    assert event_count == EVENTS
    assert [e.id for e in events] == last_events

    code, out, err = cli(settings, "show", str(task_id), "--json", "--actions", "3")
    assert code == 0, err
    shown = json.loads(out)
    assert (shown["action_count"], shown["event_count"]) == (CHAIN, EVENTS)
    assert [a["rank"] for a in shown["actions"]] == [1, 2, 3, 60_000]
    assert len(shown["events"]) == 50
    code, out, err = cli(settings, "show", str(task_id), "--events", "2")
    assert code == 0, err
    assert "actions 1-50 of 100,000 (and the current one, 60,000); --actions N to see more" in out
    assert "the last 2 of 131,072 events; --events N to see more" in out
    assert out.count("enqueued with 1 action(s)") == 2


def test_show_of_a_small_task_lists_everything(client: Client) -> None:
    task_id = client.enqueue("short", [NOOP, NOOP])
    task, count = client.store.get_task_page(task_id, 50)
    assert (count, [a.rank for a in task.actions]) == (2, [1, 2])
    events, event_count = client.store.admin.recent_events(task_id, 50)
    parts = render_task(task, events, action_count=count, event_count=event_count)
    assert not any("to see more" in str(p) for p in parts)
