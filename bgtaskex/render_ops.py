"""What the CLI shows of the operations: stats, queues, processes, rules and runs, as
rich tables (bgtaskex.render: the tasks; bgtaskex.views: the JSON for scripts)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import QueuePause, QueueSummary, RunRecord, Stats
from .render import ago, duration, seconds_text, styled, utc_time
from .views import stats_dict


def render_stats(stats: Stats) -> list[Any]:
    from rich.table import Table
    from rich.text import Text

    data = stats_dict(stats)
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("QUEUE", "TYPE", "STATUS", "TASKS"):
        table.add_column(column, justify="right" if column == "TASKS" else "left")
    for row in data["tasks"]:
        table.add_row(row["queue"], row["type"], styled(row["status"]), f"{row['count']:,}")
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
            styled(last["status"]) if last else "-",
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


def run_count_items(run: RunRecord) -> list[tuple[int, str]]:
    """What a run did, its counts that are not 0, as (count, label): `(3, "finished")`."""
    return [(getattr(run, name), label) for name, label in _RUN_COUNTS if getattr(run, name)]


def run_counts(run: RunRecord) -> str:
    """What a run did, its counts that are not 0: `3 finished, 1 failed`; `-`: none."""
    return ", ".join(f"{count} {label}" for count, label in run_count_items(run)) or "-"


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
            utc_time(run.started_at),
            took,
            styled(run.outcome),
            run_counts(run),
            f"{run.max_overrun:.1f}s" if run.max_overrun > 0 else "-",
            escape((run.error or "-").splitlines()[0] if run.error else "-"),
        )
    return table
