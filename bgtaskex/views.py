"""What the CLI shows scripts: stable JSON objects (`--json`); bgtaskex.render draws
the same for people."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .models import (
    ActionRecord,
    BulkResult,
    Event,
    HourActivity,
    QueuePause,
    QueueSummary,
    RunRecord,
    RunSummary,
    Stats,
    Task,
    TaskPage,
    TaskState,
)
from .processes import Process

if TYPE_CHECKING:
    from .builtin.purge import Preview
    from .builtin.retention import RuleStatus
    from .health import Health


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def count(value: float | None) -> float | int | None:
    """A progress count as it was given: stored as a float (a REAL column), an integral
    one comes back as an int (`2750`, not `2750.0`)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def action_dict(action: ActionRecord) -> dict[str, Any]:
    return {
        "rank": action.rank,
        "ref": action.ref,
        "status": str(action.status),
        "attempts": action.attempts,
        "last_failure": action.last_failure,
        "params": action.params,
        "started_at": _time(action.started_at),
        "ended_at": _time(action.ended_at),
        "progress": (
            None
            if action.progress is None
            else {
                "done": count(action.progress.done),
                "total": count(action.progress.total),
                "fraction": action.progress.fraction,
                "message": action.progress.message,
            }
        ),
        "elapsed": action.elapsed,
        "eta_seconds": action.eta() if action.status == "active" else None,
    }


def task_dict(
    task: Task, action_count: int | None = None, state: TaskState | None = None
) -> dict[str, Any]:
    """The task as JSON; `action_count` is how many actions it has when `task.actions`
    is a page of them (`show --actions N`; else `Task.total_actions`: a listed task of
    many actions holds only those `list` shows); `state`, what `list` says of it."""
    found = {
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
        "cancel_requested_at": _time(task.cancel_requested_at),
        "claimed_by": task.claimed_by,
        "claim_token": task.claim_token,
        "lease_until": _time(task.lease_until),
        "not_before": _time(task.not_before),
        "unique_key": task.unique_key,
        "action_count": task.total_actions if action_count is None else action_count,
        "actions": [action_dict(a) for a in task.actions],
    }
    if state is not None:
        found["state"] = state_dict(state)
    return found


def task_page_dict(page: TaskPage, states: Mapping[int, TaskState] | None = None) -> dict[str, Any]:
    """A page of tasks (`Client.page_tasks`): `tasks` as `list --json` has them (with
    `state` when `states`, `Client.task_states`, are given), `total`,
    `total_is_lower_bound` (the count stopped there), `next_before` (the `before_id`
    of the next page, null on the last), `searched_to` (the page stopped searching at
    this id: a name glob or a time range checked task by task) and `count_searched`
    (the count read that many tasks only)."""
    states = states or {}
    return {
        "tasks": [task_dict(task, None, states.get(task.id)) for task in page.tasks],
        "total": page.total,
        "total_is_lower_bound": page.total_is_lower_bound,
        "next_before": page.next_before,
        "searched_to": page.searched_to,
        "count_searched": page.count_searched,
    }


def activity_dict(hours: Sequence[HourActivity]) -> list[dict[str, Any]]:
    """Actions ended per hour (`Client.activity`), oldest first: `hour` (its start),
    `done`, `failed`."""
    return [{"hour": _time(h.hour), "done": h.done, "failed": h.failed} for h in hours]


def bulk_dict(result: BulkResult) -> dict[str, Any]:
    """What a bulk cancel or retry did: `matched changed pending`, and `refused` as
    `[{id, reason}]`."""
    return {
        "matched": result.matched,
        "changed": result.changed,
        "pending": result.pending,
        "refused": [{"id": task_id, "reason": why} for task_id, why in result.refused],
    }


def state_dict(state: TaskState) -> dict[str, Any]:
    """`list --json`'s `state` of a task (`Client.task_states`)."""
    action = state.action
    return {
        "kind": state.kind,
        "text": state.text,
        "rank": action.rank if action is not None else None,
        "attempts": state.attempts,
        "max_attempts": state.max_attempts,
        "at": _time(state.at),
        "module": state.module,
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


def stats_dict(stats: Stats) -> dict[str, Any]:
    ended: dict[str, dict[str, int]] = {}
    for window, status, count in stats.actions_ended:
        ended.setdefault(window, {})[status] = count
    oldest = stats.oldest_waiting
    return {
        "tasks": [
            {"queue": q, "type": ty, "status": st, "count": n} for q, ty, st, n in stats.counts
        ],
        "waiting": sum(n for _q, _t, st, n in stats.counts if st not in _ENDED),
        "oldest_waiting_at": _time(oldest),
        "oldest_waiting_seconds": (
            (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else None
        ),
        "actions_ended": ended,
        "mean_action_seconds": stats.mean_action_seconds,
        "paused_queues": [pause_dict(pause) for pause in stats.paused],
        "last_ok_run_ended_at": _time(stats.last_ok_run_end),
        "runs": dict(stats.runs),
    }


def pause_dict(pause: QueuePause) -> dict[str, Any]:
    return {
        "queue": pause.queue,
        "paused_at": _time(pause.paused_at),
        "reason": pause.reason,
        "paused_by": pause.paused_by,
    }


def queue_dict(summary: QueueSummary) -> dict[str, Any]:
    """One queue of `bgtaskex queues --json`."""
    pause = summary.pause
    return {
        "queue": summary.queue,
        "waiting": summary.waiting,
        "running": summary.running,
        "failed": summary.failed,
        "oldest_waiting_id": summary.oldest_waiting_id,
        "oldest_waiting_at": _time(summary.oldest_waiting_at),
        "paused": pause is not None,
        "paused_at": _time(pause.paused_at) if pause is not None else None,
        "reason": pause.reason if pause is not None else None,
        "paused_by": pause.paused_by if pause is not None else None,
    }


_ENDED = ("finished", "failed", "cancelled")


def summary_dict(summary: RunSummary) -> dict[str, Any]:
    return {
        "run_id": summary.run_id,
        "started_at": _time(summary.started_at),
        "budget": summary.budget,
        "lock_wait": round(summary.lock_wait, 6),
        "elapsed": round(summary.elapsed, 6),
        "finished": summary.finished,
        "paused": summary.paused,
        "failed": summary.failed,
        "errored": summary.errors,
        "cancelled": summary.cancelled,
        "lost": summary.lost,
        "actions": summary.actions,
        "purged": summary.purged,
        "left_waiting": summary.left_waiting,
        "missing_modules": list(summary.missing_modules),
        "max_overrun": round(summary.max_overrun, 6),
        "idle": summary.idle,
    }


def process_dict(process: Process, next_at: datetime | None) -> dict[str, Any]:
    window = process.window
    return {
        "name": process.name,
        "queues": list(process.queues) if process.queues else None,
        "exclude_queues": list(process.exclude_queues),
        "max_execution_time": process.max_execution_time,
        "every": process.every,
        "cron": process.cron,
        "window": (
            None
            if window is None
            else {
                "days": list(window.days),
                "start": window.start,
                "end": window.end,
                "enabled": window.enabled,
            }
        ),
        "callable": process.callable,
        "next_at": next_at.isoformat(timespec="seconds") if next_at else None,
    }


def rule_dict(status: RuleStatus, database: str) -> dict[str, Any]:
    """A retention rule and its latest walk, for `rules list --json`."""
    rule, last = status.rule, status.last
    action = last.actions[0] if last and last.actions else None
    params = action.params if action else {}
    return {
        "name": rule.name,
        "enabled": rule.enabled,
        "database": database,
        "table": rule.table,
        "deletes": rule.describe(),
        "also_delete": [{"table": c.table, "column": c.column} for c in rule.also_delete],
        "chunk_size": rule.chunk_size,
        "hooks": list(rule.hooks),
        "last_task": None
        if last is None
        else {
            "id": last.id,
            "status": str(last.status),
            "created_at": _time(last.created_at),
            "ended_at": _time(last.ended_at),
            "deleted": params.get("deleted"),
            "total": params.get("total"),
            "skipped": params.get("skipped_count"),
        },
    }


def preview_dict(preview: Preview, database: str, deletes: str) -> dict[str, Any]:
    return {
        "rule": preview.rule,
        "database": database,
        "table": preview.table,
        "key": preview.key,
        "deletes": deletes,
        "count": preview.count,
        "low": preview.low,
        "high": preview.high,
        "sample": list(preview.sample),
    }


def run_dict(run: RunRecord) -> dict[str, Any]:
    """A run's record (`bgtaskex runs --json`, `check --json`)."""
    ended = run.ended_at
    return {
        "id": run.id,
        "run_id": run.run_id,
        "process": run.process,
        "host": run.host,
        "pid": run.pid,
        "lock": run.lock,
        "started_at": _time(run.started_at),
        "ended_at": _time(ended),
        "duration": (ended - run.started_at).total_seconds() if ended is not None else None,
        "budget": run.budget,
        "outcome": run.outcome,
        "finished": run.finished,
        "paused": run.paused,
        "failed": run.failed,
        "errored": run.errors,
        "cancelled": run.cancelled,
        "lost": run.lost,
        "actions": run.actions,
        "left_waiting": run.left_waiting,
        "purged": run.purged,
        "max_overrun": run.max_overrun,
        "error": run.error,
    }


def health_dict(health: Health, problems: list[str], notes: list[str]) -> dict[str, Any]:
    """`bgtaskex check --json`: the status, each problem and note as a sentence, and
    what they were read from."""
    last = health.last_run
    return {
        "status": "warning" if problems else "ok",
        "problems": problems,
        "notes": notes,
        "no_schema": health.no_schema,
        "stuck_after": health.stuck_after,
        "stuck": health.stuck,
        "stuck_ids": list(health.stuck_ids),
        "unimportable": health.unimportable,
        "modules": [{"module": m, "why": why} for m, why in health.modules],
        "waiting": health.waiting,
        "lock": health.lock,
        "stale_after": health.stale_after,
        "run_expected": health.run_expected,
        "last_run": run_dict(last) if last is not None else None,
        "last_ok_run_ended_at": _time(health.last_ok_end),
        "stale": health.stale,
        "late": [
            {
                "process": late.process,
                "last_ok_run_ended_at": _time(late.last_ok_end),
                "expected_within": late.expected_within,
            }
            for late in health.late
        ],
        "failing": [run_dict(run) for run in health.failing],
        "failed_within": health.failed_within,
        "failed_recently": health.failed_recently,
        "failed_recently_ids": list(health.failed_ids),
        "error": health.error,
    }
