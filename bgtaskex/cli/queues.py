"""The queue commands: queues (each queue and its pause), pause and resume.

Each parses, calls the `Client` and prints; heavy modules are imported inside. A pause
lives in the database: every run on every host honours it from its next task on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from .common import State, echo_json, pass_state, print_rich

if TYPE_CHECKING:
    from ..client import Client
    from ..models import Task


@click.command(
    epilog="""\b
Examples:
  bgtaskex queues
  bgtaskex queues --json | jq '.[] | select(.paused)'""",
)
@click.option("--json", "as_json", is_flag=True, help="A JSON array of queue objects.")
@pass_state
def queues(state: State, as_json: bool) -> None:
    """Each queue that has tasks or a pause: tasks waiting, running and failed, the
    oldest waiting task, and whether (since when, why, by whom) it is paused."""
    found = state.client(readonly=True).queues()
    if as_json:
        from ..views import queue_dict

        echo_json([queue_dict(queue) for queue in found])
    elif not found:
        click.echo("no queues yet (a queue exists once a task is queued in it or it is paused)")
    else:
        from ..render_ops import render_queues

        print_rich(render_queues(found))


@click.command(
    epilog="""\b
Examples:
  bgtaskex pause reports --reason 'warehouse maintenance until 14:00'
  bgtaskex resume reports""",
)
@click.argument("queue")
@click.option("--reason", metavar="TEXT", help="Why, for the others (shown by queues, check).")
@pass_state
def pause(state: State, queue: str, reason: str | None) -> None:
    """Pause QUEUE: from their next task on, the runs on every host take none of its
    tasks; a task executing finishes its current hook and stops before its next hook.
    Pausing a paused queue keeps its start and replaces the reason when one is given."""
    paused, new = state.client().pause(queue, reason)
    from ..render_ops import pause_line

    click.echo(pause_line(paused) if new else f"already {pause_line(paused)}")


@click.command(
    epilog="""\b
Examples:
  bgtaskex resume reports"""
)
@click.argument("queue")
@pass_state
def resume(state: State, queue: str) -> None:
    """Resume QUEUE: its tasks run again from the next run on (on PostgreSQL the daemon
    is woken at once). Exit 5 when QUEUE is not paused."""
    state.client(create=False).resume(queue)  # on a fresh database: not paused, nothing made
    click.echo(f"queue {queue.strip()} resumed")


def paused_note(client: Client, tasks: list[Task]) -> list[str]:
    """For `list`: a line for each paused queue of the tasks shown not ended."""
    shown = {task.queue for task in tasks if task.ended_at is None}
    if not shown:
        return []
    from ..render_ops import pause_line

    return [pause_line(p) for p in client.paused_queues() if p.queue in shown]


def enqueued_note(client: Client, queue: str) -> list[str]:
    """For `enqueue` (on stderr): a line when the task's queue is paused."""
    from ..render_ops import enqueued_in_pause

    name = queue.strip()
    return [enqueued_in_pause(p) for p in client.paused_queues() if p.queue == name]
