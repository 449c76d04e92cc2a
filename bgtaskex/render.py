"""What the CLI shows people: rich tables and text (bgtaskex.views: the JSON for scripts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .models import (
    ActionRecord,
    Event,
    Task,
    TaskState,
)


def ago(value: datetime) -> str:
    """`5m ago`: how long ago `value` was, in its largest unit."""
    seconds = max(0, int((datetime.now(UTC) - value).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


_STYLE = {
    "ok": "green",
    "storage": "bold red",
    "refused": "bold red",
    "died": "bold red",
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


def styled(value: str) -> str:
    style = _STYLE.get(str(value))
    return f"[{style}]{value}[/]" if style else str(value)


def percent(action: ActionRecord | None) -> str:
    if action is None or action.progress is None or action.progress.fraction is None:
        return "-"
    return f"{100 * action.progress.fraction:.0f}%"


def duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours < 48 else f"{hours // 24}d{hours % 24:02d}h"


def seconds_text(seconds: float) -> str:
    """A duration in the largest unit that divides it, as a config would say it: `400d`,
    `90m`, `45s`, `1500ms` (not `3.456e+07s`)."""
    if seconds == 0:
        return "0s"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    milliseconds = seconds * 1000
    if milliseconds == round(milliseconds):
        return f"{milliseconds:.0f}ms"
    return f"{seconds:g}s"


def _in(value: datetime) -> str:
    return f"in {duration((value - datetime.now(UTC)).total_seconds())}"


def due_later(task: Task) -> datetime | None:
    """When a waiting task becomes due, if that is still ahead (delayed, snoozed, a
    retry's backoff); None: due now, or ended."""
    at = task.not_before
    if at is None or task.ended_at is not None or at <= datetime.now(UTC):
        return None
    return at


def due_text(at: datetime) -> str:
    """A due time as `show` prints it (UTC, as every time the CLI prints): `2026-12-24
    06:00:00 UTC (in 17d20h)`."""
    return f"{utc_time(at)} UTC ({_in(at)})"


def render_tasks(tasks: list[Task], states: dict[int, TaskState] | None = None) -> Any:
    """`list`: one row per task. With `states` (`Client.task_states`), the ACTION and
    ATTEMPTS of the failed or next action, and the STATE in plain words."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("ID", "NAME", "QUEUE", "TYPE", "STATUS", "ACTION", "PROGRESS", "ATTEMPTS")
    later = {task.id: due_later(task) for task in tasks}
    due = ("DUE",) if any(later.values()) else ()  # only when a task waits for its time
    state_column = ("STATE",) if states is not None else ()
    for column in (*columns, *state_column, *due, "AGE", "CHANGED"):
        right = column in ("ID", "ATTEMPTS", "PROGRESS")
        table.add_column(
            column,
            justify="right" if right else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width={"NAME": 32, "ACTION": 32, "STATE": 56}.get(column),
        )
    for task in tasks:
        state = states.get(task.id) if states is not None else None
        current = state.action if state is not None else task.current_action
        action = "-"
        if current is not None:
            action = f"{current.rank}/{task.total_actions} {current.ref.rsplit(':', 1)[-1]}"
        at = later[task.id]
        when = [_in(at) if at else "-"] if due else []
        said = [_state(state)] if states is not None else []
        table.add_row(
            str(task.id),
            escape(task.name),
            escape(task.queue),
            str(task.type),
            styled(task.status),
            escape(action),
            percent(current) if not task.ended_at else "-",
            str(state.attempts if state else current.attempts) if current else "0",
            *said,
            *when,
            ago(task.created_at),
            ago(task.updated_at),
        )
    return table


_STATE_STYLE = {
    "failed": "red",
    "died": "yellow",
    "waiting_for_module": "bold yellow",
    "queue_paused": "yellow",
}


def _state(state: TaskState | None) -> str:
    from rich.markup import escape

    if state is None:
        return "-"
    style = _STATE_STYLE.get(state.kind)
    return f"[{style}]{escape(state.text)}[/]" if style else escape(state.text)


def rate_text(action: ActionRecord) -> str | None:
    """How fast an action goes, from its own execute time: `210/s`, `0.25/s`; None
    before it has a rate."""
    p = action.progress
    if p is None or action.elapsed <= 0 or p.done <= 0:
        return None
    rate = p.done / action.elapsed
    return f"{rate:,.0f}/s" if rate >= 10 else f"{rate:.2f}/s"


def eta_text(action: ActionRecord) -> str | None:
    """`~18s of run time left`: the execute time an active action still needs at its
    rate so far; None when it cannot be told (or the action is not active)."""
    if rate_text(action) is None or action.status != "active":
        return None
    eta = action.eta()
    return None if eta is None else f"~{duration(eta)} of run time left"


def progress_line(action: ActionRecord, width: int = 24) -> str | None:
    """`[████████░░░░] 62% 6,200/10,000 · 210/s · ~18s of run time left · message`."""
    p = action.progress
    if p is None:
        return None
    parts: list[str] = []
    fraction = p.fraction
    if fraction is not None:
        filled = round(fraction * width)
        parts.append(f"[{'█' * filled}{'░' * (width - filled)}] {100 * fraction:.0f}%")
        parts.append(f"{p.done:,.0f}/{p.total:,.0f}")
    else:
        parts.append(f"{p.done:,.0f} done")
    parts.extend(text for text in (rate_text(action), eta_text(action)) if text)
    if p.message:
        parts.append(p.message)
    return " · ".join(parts)


def utc_time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def render_task(
    task: Task,
    events: list[Event],
    verbose: bool = False,
    *,
    action_count: int | None = None,
    event_count: int | None = None,
) -> list[Any]:
    """`show`: the task, its actions and its history. `action_count` and `event_count`
    are the totals when `task.actions` (its first ranks, plus the current action) and
    `events` (the latest) are pages of them."""
    from rich.text import Text

    parts: list[Any] = [_task_head(task), Text("\nactions", style="bold")]
    for action in task.actions:
        parts.extend(_action_parts(action, action.rank == task.current_rank and not task.ended_at))
    if action_count is not None and action_count > len(task.actions):
        parts.append(Text(_actions_page(task, action_count), style="dim"))
    parts.append(Text("\nhistory (UTC)", style="bold"))
    parts.append(_history(events, verbose))
    if event_count is not None and event_count > len(events):
        parts.append(
            Text(
                f"the last {len(events):,} of {event_count:,} events; --events N to see more",
                style="dim",
            )
        )
    if not verbose and any(e.error for e in events):
        parts.append(Text("(tracebacks hidden: add --verbose)", style="dim"))
    return parts


def _task_head(task: Task) -> Any:
    """`show`'s first lines: the task, its times, its claim, when it is due, its key."""
    from rich.markup import escape
    from rich.text import Text

    ended = f" · ended {utc_time(task.ended_at)}" if task.ended_at else ""
    claim = ""
    if task.claimed_by:
        lease = f", lease until {utc_time(task.lease_until)}" if task.lease_until else ""
        claim = f"\nclaimed by {escape(task.claimed_by)} (token {task.claim_token}{lease})"
    later = due_later(task)
    if later is not None:
        claim += f"\ndue {due_text(later)}"
    if task.unique_key is not None:
        claim += f"\nunique key {escape(task.unique_key)}"
    created, updated = utc_time(task.created_at), utc_time(task.updated_at)
    return Text.from_markup(
        f"[bold]task {task.id}[/] {escape(task.name)} · {styled(task.status)} · "
        f"{task.type} · queue {escape(task.queue)}\n"
        f"created {created} · updated {updated}{ended} (UTC)" + claim
    )


def _action_parts(action: ActionRecord, current: bool) -> list[Any]:
    """`show`'s lines of one action: status and attempts, why its last execute died,
    its progress, its params."""
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    parts: list[Any] = [
        Text.from_markup(
            f"{'▶' if current else ' '} {action.rank}. {escape(action.ref)} · "
            f"{styled(action.status)} · attempts {action.attempts}"
            + (f" · {duration(action.elapsed)} in execute" if action.elapsed >= 1 else "")
        )
    ]
    if action.last_failure:  # why its last execute died (the retry waits: `due`)
        why = Text(f"last failure: {action.last_failure}")
        parts.append(Padding(why, (0, 0, 0, 5), expand=False))
    bar = progress_line(action)
    if bar:
        parts.append(Padding(Text(bar), (0, 0, 0, 5), expand=False))
    params = json.dumps(action.params, indent=2, ensure_ascii=False)
    parts.append(Padding(Text(params, style="dim"), (0, 0, 0, 5), expand=False))
    return parts


def _history(events: list[Event], verbose: bool) -> Any:
    """`show`'s history table: one row per event, the tracebacks with `verbose`."""
    from rich.markup import escape
    from rich.table import Table

    history = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("AT", "RUN", "WHAT", "TRANSITION", "MESSAGE"):
        history.add_column(column, overflow="fold", no_wrap=column in ("AT", "RUN"))
    for event in events:
        what = "task" if event.rank is None else f"action {event.rank}"
        if event.old_status is None and event.new_status is None:
            transition = "note"  # Action.note()
        elif event.old_status == event.new_status:
            transition = f"{event.new_status} (error)" if event.error else str(event.new_status)
        else:
            transition = f"{event.old_status or '∅'} → {event.new_status}"
        message = escape(event.message)
        if event.error and verbose:
            message = f"{message}\n[dim]{escape(event.error.rstrip())}[/]"
        history.add_row(utc_time(event.at), event.run_id or "-", what, styled(transition), message)
    return history


def _actions_page(task: Task, count: int) -> str:
    """`actions 1-50 of 100,000 (and the current one, 60,001); --actions N to see more`."""
    first = 0
    while first < len(task.actions) and task.actions[first].rank == first + 1:
        first += 1
    shown = f"actions 1-{first:,} of {count:,}" if first else f"no actions of {count:,} shown"
    others = [f"{a.rank:,}" for a in task.actions[first:]]
    if others:
        shown += f" (and the current one, {', '.join(others)})"
    return shown + "; --actions N to see more"
