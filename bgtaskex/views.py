"""What the CLI shows: stable JSON objects for scripts, rich tables for people."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .models import ActionRecord, Event, Task


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def action_dict(action: ActionRecord) -> dict[str, Any]:
    return {
        "rank": action.rank,
        "ref": action.ref,
        "status": str(action.status),
        "attempts": action.attempts,
        "params": action.params,
        "started_at": _time(action.started_at),
        "ended_at": _time(action.ended_at),
    }


def task_dict(task: Task) -> dict[str, Any]:
    return {
        "id": task.id,
        "name": task.name,
        "type": str(task.type),
        "queue": task.queue,
        "status": str(task.status),
        "current_rank": task.current_rank,
        "last_run_id": task.last_run_id,
        "created_at": _time(task.created_at),
        "updated_at": _time(task.updated_at),
        "ended_at": _time(task.ended_at),
        "actions": [action_dict(a) for a in task.actions],
    }


def event_dict(event: Event) -> dict[str, Any]:
    return {
        "at": _time(event.at),
        "run_id": event.run_id,
        "rank": event.rank,
        "old_status": event.old_status,
        "new_status": event.new_status,
        "message": event.message,
        "error": event.error,
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


def _ago(value: datetime) -> str:
    seconds = max(0, int((datetime.now(UTC) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


_STYLE = {
    "finished": "green",
    "done": "green",
    "failed": "bold red",
    "running": "cyan",
    "starting": "cyan",
    "active": "cyan",
    "recovering": "yellow",
    "paused": "yellow",
    "skipped": "dim",
}


def _status(value: str) -> str:
    style = _STYLE.get(str(value))
    return f"[{style}]{value}[/]" if style else str(value)


def render_tasks(tasks: list[Task]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "NAME", "QUEUE", "TYPE", "STATUS", "ACTION", "ATTEMPTS", "AGE", "CHANGED"):
        table.add_column(column, justify="right" if column in ("ID", "ATTEMPTS") else "left")
    for task in tasks:
        current = task.current_action
        table.add_row(
            str(task.id),
            task.name,
            task.queue,
            str(task.type),
            _status(task.status),
            f"{current.rank}/{len(task.actions)} {current.ref}" if current else "-",
            str(current.attempts) if current else "0",
            _ago(task.created_at),
            _ago(task.updated_at),
        )
    return table


def _short(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def render_task(task: Task, events: list[Event], verbose: bool = False) -> list[Any]:
    from rich.markup import escape
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    ended = f" · ended {_short(task.ended_at)}" if task.ended_at else ""
    parts: list[Any] = [
        Text.from_markup(
            f"[bold]task {task.id}[/] {escape(task.name)} · {_status(task.status)} · "
            f"{task.type} · queue {escape(task.queue)}\n"
            f"created {_short(task.created_at)} · updated {_short(task.updated_at)}{ended} (UTC)"
        ),
        Text("\nactions", style="bold"),
    ]
    for action in task.actions:
        current = action.rank == task.current_rank and not task.ended_at
        parts.append(
            Text.from_markup(
                f"{'▶' if current else ' '} {action.rank}. {escape(action.ref)} · "
                f"{_status(action.status)} · attempts {action.attempts}"
            )
        )
        params = json.dumps(action.params, indent=2, ensure_ascii=False)
        parts.append(Padding(Text(params, style="dim"), (0, 0, 0, 5), expand=False))
    parts.append(Text("\nhistory (UTC)", style="bold"))
    history = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("AT", "RUN", "WHAT", "TRANSITION", "MESSAGE"):
        history.add_column(column, overflow="fold", no_wrap=column in ("AT", "RUN"))
    for event in events:
        what = "task" if event.rank is None else f"action {event.rank}"
        if event.old_status == event.new_status:
            transition = f"{event.new_status} (error)" if event.error else str(event.new_status)
        else:
            transition = f"{event.old_status or '∅'} → {event.new_status}"
        message = escape(event.message)
        if event.error and verbose:
            message = f"{message}\n[dim]{escape(event.error.rstrip())}[/]"
        history.add_row(_short(event.at), event.run_id or "-", what, _status(transition), message)
    parts.append(history)
    if not verbose and any(e.error for e in events):
        parts.append(Text("(tracebacks hidden: add --verbose)", style="dim"))
    return parts
