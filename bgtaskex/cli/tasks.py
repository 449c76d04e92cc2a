"""The commands on tasks: list, show, retry, cancel, purge (enqueue: cli/enqueue).

Each parses, calls the `Client` and prints; heavy modules are imported inside.
"""

from __future__ import annotations

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
from .queues import paused_note

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
