"""What the CLI shows people: rich tables and text (bgtaskex.views: the JSON for scripts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from .models import (
    ActionRecord,
    Event,
    QueuePause,
    QueueSummary,
    RunRecord,
    Stats,
    Task,
    TaskState,
)
from .views import stats_dict


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


def _status(value: str) -> str:
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
    return f"{_short(at)} UTC ({_in(at)})"


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
            action = f"{current.rank}/{len(task.actions)} {current.ref.rsplit(':', 1)[-1]}"
        at = later[task.id]
        when = [_in(at) if at else "-"] if due else []
        said = [_state(state)] if states is not None else []
        table.add_row(
            str(task.id),
            escape(task.name),
            escape(task.queue),
            str(task.type),
            _status(task.status),
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


def _short(value: datetime | None) -> str:
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
    from rich.markup import escape
    from rich.padding import Padding
    from rich.text import Text

    ended = f" · ended {_short(task.ended_at)}" if task.ended_at else ""
    claim = ""
    if task.claimed_by:
        lease = f", lease until {_short(task.lease_until)}" if task.lease_until else ""
        claim = f"\nclaimed by {escape(task.claimed_by)} (token {task.claim_token}{lease})"
    later = due_later(task)
    if later is not None:
        claim += f"\ndue {due_text(later)}"
    if task.unique_key is not None:
        claim += f"\nunique key {escape(task.unique_key)}"
    parts: list[Any] = [
        Text.from_markup(
            f"[bold]task {task.id}[/] {escape(task.name)} · {_status(task.status)} · "
            f"{task.type} · queue {escape(task.queue)}\n"
            f"created {_short(task.created_at)} · updated {_short(task.updated_at)}{ended} (UTC)"
            + claim
        ),
        Text("\nactions", style="bold"),
    ]
    for action in task.actions:
        current = action.rank == task.current_rank and not task.ended_at
        parts.append(
            Text.from_markup(
                f"{'▶' if current else ' '} {action.rank}. {escape(action.ref)} · "
                f"{_status(action.status)} · attempts {action.attempts}"
                + (f" · {duration(action.elapsed)} in execute" if action.elapsed >= 1 else "")
            )
        )
        if action.last_failure:  # why its last execute died (the retry waits: `due`)
            why = Text(f"last failure: {action.last_failure}")
            parts.append(Padding(why, (0, 0, 0, 5), expand=False))
        bar = progress_line(action)
        if bar:
            parts.append(Padding(Text(bar), (0, 0, 0, 5), expand=False))
        params = json.dumps(action.params, indent=2, ensure_ascii=False)
        parts.append(Padding(Text(params, style="dim"), (0, 0, 0, 5), expand=False))
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
        history.add_row(_short(event.at), event.run_id or "-", what, _status(transition), message)
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


def render_stats(stats: Stats) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    data = stats_dict(stats)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("QUEUE", "TYPE", "STATUS", "TASKS"):
        table.add_column(column, justify="right" if column == "TASKS" else "left")
    for row in data["tasks"]:
        table.add_row(row["queue"], row["type"], _status(row["status"]), f"{row['count']:,}")
    oldest = data["oldest_waiting_seconds"]
    ended = data["actions_ended"]
    mean = data["mean_action_seconds"]
    lines = [
        f"waiting tasks: {data['waiting']:,}"
        + (f", the oldest for {duration(oldest)}" if oldest is not None else ""),
        "actions ended in the last hour: "
        f"{ended['1h']['done']:,} done, {ended['1h']['failed']:,} failed; "
        f"last day: {ended['1d']['done']:,} done, {ended['1d']['failed']:,} failed",
        "mean execute time of actions done in the last day: "
        + (f"{mean:.2f}s" if mean is not None else "-"),
        *(pause_line(pause) for pause in stats.paused),
    ]
    return [table if data["tasks"] else Text("no tasks"), Text("\n".join(lines))]


def pause_line(pause: QueuePause) -> str:
    """`queue reports paused 2h ago by ops@db1 (nightly maintenance): no run takes its
    tasks`."""
    by = f" by {pause.paused_by}" if pause.paused_by else ""
    why = f" ({pause.reason})" if pause.reason else ""
    return f"queue {pause.queue} paused {ago(pause.paused_at)}{by}{why}: no run takes its tasks"


def enqueued_in_pause(pause: QueuePause) -> str:
    """`note: queue reports is paused (since 2h ago by ops@db1: nightly maintenance);
    its tasks wait for bgtaskex resume reports`."""
    import shlex

    by = f" by {pause.paused_by}" if pause.paused_by else ""
    why = f": {pause.reason}" if pause.reason else ""
    return (
        f"note: queue {pause.queue} is paused (since {ago(pause.paused_at)}{by}{why}); "
        f"its tasks wait for bgtaskex resume {shlex.quote(pause.queue)}"
    )


def render_queues(queues: list[QueueSummary]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("QUEUE", "WAITING", "RUNNING", "FAILED", "OLDEST WAITING", "PAUSED"):
        table.add_column(
            column, justify="right" if column in ("WAITING", "RUNNING", "FAILED") else "left"
        )
    for queue in queues:
        oldest = "-"
        if queue.oldest_waiting_id is not None and queue.oldest_waiting_at is not None:
            oldest = f"{queue.oldest_waiting_id} ({ago(queue.oldest_waiting_at)})"
        pause = queue.pause
        paused = "-"
        if pause is not None:
            paused = ago(pause.paused_at) + (f": {pause.reason}" if pause.reason else "")
        table.add_row(
            escape(queue.queue),
            f"{queue.waiting:,}",
            f"{queue.running:,}",
            f"{queue.failed:,}",
            oldest,
            escape(paused),
        )
    return table


def _all_but(excluded: list[str]) -> str:
    return "all but " + ", ".join(excluded) if excluded else "all"


def render_processes(rows: list[dict[str, Any]]) -> Any:
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("NAME", "QUEUES", "BUDGET", "TRIGGER", "WINDOW", "CALLABLE", "NEXT"):
        table.add_column(column)
    for row in rows:
        trigger = f"cron {row['cron']}" if row["cron"] else f"every {seconds_text(row['every'])}"
        window = row["window"]
        table.add_row(
            row["name"],
            ", ".join(row["queues"]) if row["queues"] else _all_but(row["exclude_queues"]),
            seconds_text(row["max_execution_time"]) if row["max_execution_time"] else "default",
            trigger,
            "-"
            if window is None
            else f"{window['start']}-{window['end']} days {window['days']}"
            + ("" if window["enabled"] else " (disabled)"),
            row["callable"] or "-",
            row["next_at"] or "never",
        )
    return table


def render_rules(rows: list[dict[str, Any]]) -> Any:
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("RULE", "ON", "DELETES", "CHUNK", "LAST TASK", "STATUS", "DELETED", "WHEN"):
        table.add_column(column, justify="right" if column in ("CHUNK", "DELETED") else "left")
    for row in rows:
        last = row["last_task"]
        when = "-"
        if last is not None:
            moment = last["ended_at"] or last["created_at"]
            when = ago(datetime.fromisoformat(moment.replace("Z", "+00:00")))
        deleted = "-"
        if last is not None and last["deleted"] is not None:
            deleted = f"{last['deleted']}/{last['total']}"
            if last["skipped"]:
                deleted += f" ({last['skipped']} skipped)"
        table.add_row(
            escape(row["name"]),
            "yes" if row["enabled"] else "[dim]no[/]",
            escape(row["deletes"]),
            str(row["chunk_size"]),
            str(last["id"]) if last else "never run",
            _status(last["status"]) if last else "-",
            deleted,
            when,
        )
    return table


_RUN_COUNTS = (
    ("finished", "finished"),
    ("paused", "paused"),
    ("failed", "failed"),
    ("errors", "errored"),
    ("cancelled", "cancelled"),
    ("lost", "lost"),
    ("left_waiting", "left waiting"),
    ("purged", "purged"),
)


def run_counts(run: RunRecord) -> str:
    """What a run did, its counts that are not 0: `3 finished, 1 failed`; `-`: none."""
    done = [f"{getattr(run, name)} {label}" for name, label in _RUN_COUNTS if getattr(run, name)]
    return ", ".join(done) or "-"


def render_runs(runs: list[RunRecord]) -> Any:
    """`bgtaskex runs`: one line per run, newest first."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ("ID", "RUN", "PROCESS", "HOST:PID", "STARTED (UTC)", "DURATION", "OUTCOME")
    for column in (*columns, "COUNTS", "OVERRUN", "ERROR"):
        table.add_column(
            column,
            justify="right" if column in ("ID", "DURATION", "OVERRUN") else "left",
            no_wrap=True,
            overflow="ellipsis",
            max_width=48 if column in ("ERROR", "COUNTS") else None,
        )
    for run in runs:
        ended = run.ended_at
        took = duration((ended - run.started_at).total_seconds()) if ended else "-"
        table.add_row(
            str(run.id),
            run.run_id,
            escape(run.process or "-"),
            escape(f"{run.host}:{run.pid}"),
            _short(run.started_at),
            took,
            _status(run.outcome),
            run_counts(run),
            f"{run.max_overrun:.1f}s" if run.max_overrun > 0 else "-",
            escape((run.error or "-").splitlines()[0] if run.error else "-"),
        )
    return table
