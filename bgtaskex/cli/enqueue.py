"""The `enqueue` command: a task from arguments or a JSON file, now or later.

It parses, calls the `Client` and prints; heavy modules are imported inside.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Any

import click

from ..exceptions import UsageError
from .common import State, duration, echo_json, pass_state
from .queues import enqueued_note


def _ref_arg(text: str) -> Any:
    """`module:Class` or `module:Class={"json": "params"}`."""
    ref, sep, params = text.partition("=")
    if not sep:
        return ref
    try:
        return (ref, json.loads(params))
    except json.JSONDecodeError as err:
        raise UsageError(f"params of {ref!r} are not valid JSON: {err}") from None
    except RecursionError:
        raise UsageError(f"params of {ref!r} are nested too deeply") from None


def _read_task_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    except OSError as err:
        raise UsageError(f"cannot read {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        where = "standard input" if path == "-" else path
        why = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise UsageError(f"{where} is not valid JSON: {why}") from None
    if not isinstance(data, dict):
        raise UsageError("a task file must hold a JSON object with 'name' and 'actions'")
    unknown = set(data) - {"name", "type", "queue", "actions", "not_before", "unique_key"}
    if unknown:
        raise UsageError(f"unknown key {sorted(unknown)[0]!r} in task file")
    if "name" not in data or "actions" not in data:
        raise UsageError("a task file needs 'name' and 'actions'")
    if not isinstance(data["actions"], list):
        raise UsageError('\'actions\' must be a list of {"ref": ..., "params": {...}}')
    return data


@click.command(
    epilog="""\b
Examples:
  bgtaskex --import myapp.jobs enqueue reindex myapp.jobs:Reindex myapp.jobs:Notify
  bgtaskex --import myapp.jobs enqueue reindex 'myapp.jobs:Reindex={"batch": 500}' --type cron
  bgtaskex --import myapp.jobs enqueue --file task.json
  echo '{"name": "x", "actions": [{"ref": "myapp.jobs:Reindex"}]}' | bgtaskex enqueue --file -
  bgtaskex --import myapp.jobs enqueue report myapp.jobs:Report --at 2026-12-24T06:00
  bgtaskex --import myapp.jobs enqueue reindex myapp.jobs:Reindex --in 10m --unique-key reindex""",
)
@click.argument("name", required=False)
@click.argument("refs", nargs=-1, metavar="[REF[=JSON]]...")
@click.option("--file", "file_", metavar="FILE", help="Read the task as JSON ('-' = stdin).")
@click.option("--type", "type_", type=click.Choice(["cron", "interactive"]), default=None)
@click.option("--queue", default=None, help="Queue name (default 'default').")
@click.option(
    "--at",
    "at",
    metavar="WHEN",
    help="Not due before WHEN: 2026-11-28T14:30 (local time unless an offset or Z is given).",
)
@click.option(
    "--in", "delay", callback=duration, metavar="DURATION", help="Not due for DURATION: 10m, 2h."
)
@click.option(
    "--unique-key",
    metavar="KEY",
    help="Queue nothing while a task with KEY has not ended (prints its id).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new task as JSON.")
@click.option("-q", "--quiet", is_flag=True, help="Print only the new task's id.")
@pass_state
def enqueue(
    state: State,
    name: str | None,
    refs: tuple[str, ...],
    file_: str | None,
    type_: str | None,
    queue: str | None,
    at: str | None,
    delay: float | None,
    unique_key: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Queue a task NAME made of actions REF (module:Class), run in order.

    Params go after '=' as a JSON object: myapp.jobs:Reindex='{"batch": 500}'. With
    --unique-key, while a task with that key has not ended, print "already queued: task
    N" and exit 0.
    """
    file_due: datetime | None = None
    if file_ is not None:
        if name or refs:
            raise UsageError("give either --file or NAME REF..., not both")
        data = _read_task_file(file_)
        name, actions = data["name"], data["actions"]
        type_ = type_ or data.get("type", "cron")
        queue = queue or data.get("queue", "default")
        unique_key = unique_key or data.get("unique_key")
        if at is None and delay is None and data.get("not_before") is not None:
            file_due = _due(data["not_before"], 'task file: "not_before"')
    else:
        if not name or not refs:
            raise UsageError("enqueue needs NAME and at least one REF, or --file FILE")
        actions = [_ref_arg(r) for r in refs]
    client = state.client()
    task_id, created = client.enqueue_unique(
        name,
        actions,
        type=type_ or "cron",
        queue=queue or "default",
        not_before=file_due or _not_before(at, delay),
        unique_key=unique_key,
    )
    _print_enqueued(state, task_id, created, queue or "default", quiet=quiet, as_json=as_json)


def _print_enqueued(
    state: State, task_id: int, created: bool, queue: str, *, quiet: bool, as_json: bool
) -> None:
    """What `enqueue` prints: the id, the task as JSON, or a line; then a note when the
    queue is paused or served by no process."""
    client = state.client()
    if quiet:
        click.echo(task_id)
    elif as_json:
        from ..views import task_dict

        task = client.get(task_id)
        echo_json(task_dict(task, state=client.task_states([task])[task.id]))
    elif not created:
        click.echo(f"already queued: task {task_id}")
    else:
        from ..render import due_later, due_text

        task = client.get(task_id)
        later = due_later(task)
        due = f", due {due_text(later)}" if later is not None else ""
        click.echo(
            f"queued task {task.id}: {task.name} ({len(task.actions)} action(s), "
            f"type {task.type}, queue {task.queue}{due})"
        )
    if not quiet:
        for line in enqueued_note(client, queue):
            click.echo(line, err=True)


def _not_before(at: str | None, delay: float | None) -> timedelta | datetime | None:
    """--at WHEN (a date, as `list --since` reads one) or --in DURATION."""
    if at is not None and delay is not None:
        raise UsageError("give --at or --in, not both")
    if delay is not None:
        return timedelta(seconds=delay)
    if at is None:
        return None
    return _due(at, "--at")


_A_DATE = "a date like 2026-11-28T14:30 (local time unless an offset or Z is given)"


def _due(value: object, where: str) -> datetime:
    """The due time of --at WHEN or of a task file's "not_before": a date, not a
    duration (`parse_when` would read `2h` as two hours ago)."""
    from ..config import parse_when

    if not isinstance(value, str):  # a number in a task file: not a date (nor a delay)
        raise UsageError(f"{where} takes {_A_DATE} as a string, got {value!r}")
    if _is_duration(value):
        hint = f"; for a delay use --in {value.strip()}" if where == "--at" else ""
        raise UsageError(f"{where} takes {_A_DATE}, got {value!r}{hint}")
    try:
        return parse_when(value)
    except ValueError as err:
        why = str(err) if "out of range" in str(err) else f"expected {_A_DATE}, got {value!r}"
        raise UsageError(f"{where}: {why}") from None


def _is_duration(text: str) -> bool:
    from ..config import parse_duration

    try:
        parse_duration(text.strip())
    except ValueError:
        return False
    return True
