"""The commands on tasks: enqueue, list, show, retry, cancel, purge.

Each parses, calls the `Client` and prints; heavy modules are imported inside.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import click

from ..exceptions import InvalidState, SomeRefused, TaskNotFound, UsageError
from .common import (
    State,
    duration,
    echo_json,
    filter_options,
    pass_state,
    print_rich,
    task_filter,
)
from .queues import enqueued_note, paused_note

# -- enqueue -------------------------------------------------------------------------


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
    not_before = file_due or _not_before(at, delay)
    client = state.client()
    task_id, created = client.enqueue_unique(
        name,
        actions,
        type=type_ or "cron",
        queue=queue or "default",
        not_before=not_before,
        unique_key=unique_key,
    )
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
        for line in enqueued_note(client, queue or "default"):
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


# -- list / show ---------------------------------------------------------------------------


@click.command(
    "list",
    epilog="""\b
Examples:
  bgtaskex list                              # waiting tasks in run order, then ended ones
  bgtaskex list --status failed --since 1d
  bgtaskex list --status active --queue reports --json""",
)
@filter_options
@click.option("--limit", type=click.IntRange(min=1, max=10**9), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of task objects.")
@pass_state
def list_(state: State, /, limit: int, as_json: bool, **filters: Any) -> None:
    """Tasks still to run (in the order the run takes them), then ended ones, newest first."""
    where = task_filter(**filters)
    client = state.client(readonly=True)
    tasks = client.list_tasks(where, limit=limit)
    cap = 10_000
    total = client.count_tasks(where, up_to=limit + cap) if len(tasks) == limit else len(tasks)
    more = total - len(tasks)
    states = client.task_states(tasks)
    if as_json:
        from ..views import task_dict

        echo_json([task_dict(t, state=states[t.id]) for t in tasks])
        return
    if not tasks:
        from ..models import TaskFilter

        click.echo("no tasks match these filters" if where != TaskFilter() else "no tasks yet")
        return
    from ..render import render_tasks

    print_rich(render_tasks(tasks, states))
    for line in paused_note(client, tasks):
        click.echo(line)
    if more > 0:
        plus = "+" if more >= cap else ""
        click.echo(f"... and {more:,}{plus} more (raise --limit or narrow the filters)")


@click.command(
    epilog="""\b
Examples:
  bgtaskex show 42
  bgtaskex show 42 --verbose                 # with the tracebacks of errors
  bgtaskex show 42 --actions 500 --events 1000
  bgtaskex show 42 --json | jq '.events[-1]'""",
)
@click.argument("task_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="The task, its actions and events.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks of errors.")
@click.option(
    "--actions",
    "max_actions",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    metavar="N",
    help="Show the first N actions (and the current one), with the total count.",
)
@click.option(
    "--events",
    "max_events",
    type=click.IntRange(min=0),
    default=50,
    show_default=True,
    metavar="N",
    help="Show the latest N events of the history, with the total count.",
)
@pass_state
def show(
    state: State, task_id: int, as_json: bool, verbose: bool, max_actions: int, max_events: int
) -> None:
    """A task, its actions with their params and progress, and its history."""
    client = state.client(readonly=True)
    task, action_count = client.task_page(task_id, max_actions)
    events, event_count = client.recent_events(task_id, max_events)
    if as_json:
        from ..views import event_dict, task_dict

        echo_json(
            {
                **task_dict(task, action_count, client.task_states([task])[task.id]),
                "events": [event_dict(e) for e in events],
                "event_count": event_count,
            }
        )
    else:
        from ..render import render_task

        print_rich(
            *render_task(
                task, events, verbose=verbose, action_count=action_count, event_count=event_count
            )
        )


# -- retry / cancel ------------------------------------------------------------------------


def _each(ids: list[int], act: Callable[[int], str]) -> None:
    """Apply `act` to each id, one line per id; errors do not stop the others, and the
    exit code is that of the last error (SomeRefused)."""
    refused: TaskNotFound | InvalidState | None = None
    for task_id in ids:
        try:
            click.echo(act(task_id))
        except (TaskNotFound, InvalidState) as err:
            click.echo(f"bgtaskex: error: {err}", err=True)
            refused = err
    if refused is not None:
        raise SomeRefused(refused)


@click.command(
    epilog="""\b
Examples:
  bgtaskex retry 42 43
  bgtaskex retry 42 --from-start             # every action again, from init_params
  bgtaskex retry --all-failed --queue reports --since 1d""",
)
@click.argument("task_ids", nargs=-1, type=int, metavar="[TASK_ID]...")
@click.option("--from-start", is_flag=True, help="Re-run every action with its enqueued params.")
@click.option("--all-failed", is_flag=True, help="Every failed task the filters select.")
@filter_options
@pass_state
def retry(
    state: State, /, task_ids: tuple[int, ...], from_start: bool, all_failed: bool, **filters: Any
) -> None:
    """Put failed tasks back in the queue: their failed actions become pending again with
    their attempts reset. A task that is not failed is refused."""
    client = state.client()
    if all_failed == bool(task_ids):
        raise UsageError("give TASK_IDs or --all-failed (with optional filters), not both")
    if filters.get("statuses"):
        raise UsageError("--status does not apply to retry: it retries failed tasks")
    how = "from the start" if from_start else "its failed actions"

    def act(task_id: int) -> str:
        client.retry(task_id, from_start=from_start)
        return f"task {task_id} queued again ({how})"

    if task_ids:
        _each(list(task_ids), act)
        return
    others = {k: v for k, v in filters.items() if k != "statuses"}
    where = task_filter(statuses=("failed",), **others)
    count = 0
    while batch := client.list_tasks(where, limit=500):
        for task in batch:
            client.retry(task.id, from_start=from_start)
        count += len(batch)
    click.echo(f"{count} failed task(s) queued again ({how})")


@click.command(
    epilog="""\b
Examples:
  bgtaskex cancel 42
  bgtaskex cancel 42 43 44""",
)
@click.argument("task_ids", nargs=-1, type=int, required=True, metavar="TASK_ID...")
@pass_state
def cancel(state: State, task_ids: tuple[int, ...]) -> None:
    """End tasks as cancelled. A task a run is executing right now is cancelled at its
    next checkpoint or hook return, never under its feet."""
    client = state.client()

    def act(task_id: int) -> str:
        if client.cancel(task_id):
            return f"task {task_id} cancelled"
        return (
            f"task {task_id} is being executed by a run: "
            "it will be cancelled at its next checkpoint"
        )

    _each(list(task_ids), act)


# -- purge ---------------------------------------------------------------------------------


@click.command(
    epilog="""\b
Examples:
  bgtaskex purge --older-than 7d --yes       # every ended task older than a week
  bgtaskex purge --status failed --queue reports --dry-run
  bgtaskex purge --all --yes                 # every ended task""",
)
@filter_options
@click.option(
    "--older-than",
    callback=duration,
    metavar="DURATION",
    help="Only tasks that ended more than DURATION ago (7d, 12h).",
)
@click.option("--all", "all_", is_flag=True, help="Every ended task the other filters select.")
@click.option("--dry-run", is_flag=True, help="Print what would be deleted, delete nothing.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask (needed off a terminal).")
@pass_state
def purge(
    state: State,
    /,
    older_than: float | None,
    all_: bool,
    dry_run: bool,
    yes: bool,
    **filters: Any,
) -> None:
    """Delete ended tasks (finished, failed, cancelled) with their actions and events,
    in batches. Needs --older-than, --status or --all. Asks first on a terminal; off a
    terminal it needs --yes."""
    if older_than is None and not filters.get("statuses") and not all_:
        raise UsageError(
            "purge needs --older-than DURATION, --status STATUS or --all (every ended task)"
        )
    if not dry_run and not yes and not sys.stdin.isatty():
        raise UsageError("purge off a terminal needs --yes (or --dry-run to see what it would do)")
    ended_before = datetime.now(UTC) - timedelta(seconds=older_than) if older_than else None
    where = task_filter(**filters, ended_before=ended_before)
    client = state.client()
    count, sample = client.purge_preview(where)
    if count == 0:
        click.echo("nothing to purge")
        return
    if dry_run:
        shown = ", ".join(map(str, sorted(sample))) + (", ..." if count > len(sample) else "")
        click.echo(f"would delete {count:,} ended task(s): {shown}")
        return
    if not yes:
        click.confirm(f"Delete {count:,} ended task(s) with their actions and events?", abort=True)
    deleted = client.purge(where)
    click.echo(f"deleted {deleted:,} ended task(s)")
