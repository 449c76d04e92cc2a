"""`bgtaskex stats --prometheus`: the Prometheus text format, rendered by prometheus_client.

Meant for node_exporter's textfile collector (a cron line writes the file atomically).
"""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from .models import Stats


def render(stats: Stats) -> str:
    """The metrics of `stats`, in the Prometheus text format."""
    registry = CollectorRegistry()
    _task_gauges(registry, stats)
    _run_gauges(registry, stats)
    Gauge(
        "bgtaskex_stats_timestamp_seconds",
        "When these numbers were read.",
        registry=registry,
    ).set_to_current_time()
    return generate_latest(registry).decode()


def _task_gauges(registry: CollectorRegistry, stats: Stats) -> None:
    """The tasks by status, the oldest waiting, the actions ended, the mean execute."""
    tasks = Gauge(
        "bgtaskex_tasks",
        "Tasks by queue, type and status.",
        ["queue", "type", "status"],
        registry=registry,
    )
    for queue, type_, status, count in stats.counts:
        tasks.labels(queue, type_, status).set(count)
    oldest = Gauge(
        "bgtaskex_oldest_waiting_task_age_seconds",
        "Age of the oldest task not ended yet (0 when none).",
        registry=registry,
    )
    if stats.oldest_waiting is not None:
        oldest.set((datetime.now(UTC) - stats.oldest_waiting).total_seconds())
    ended = Gauge(
        "bgtaskex_actions_ended",
        "Actions that ended (done or failed) within the window.",
        ["window", "status"],
        registry=registry,
    )
    for window, status, count in stats.actions_ended:
        ended.labels(window, status).set(count)
    mean = Gauge(
        "bgtaskex_action_execute_seconds_mean",
        "Mean execute time of the actions done in the last day.",
        registry=registry,
    )
    if stats.mean_action_seconds is not None:
        mean.set(stats.mean_action_seconds)


def _run_gauges(registry: CollectorRegistry, stats: Stats) -> None:
    """The paused queues, the end of the last run ok, the run records by outcome."""
    paused = Gauge(
        "bgtaskex_queue_paused",
        "1 for each queue an operator paused (bgtaskex pause); no series for the others.",
        ["queue"],
        registry=registry,
    )
    for pause in stats.paused:
        paused.labels(pause.queue).set(1)
    last_ok = Gauge(
        "bgtaskex_last_run_end_timestamp_seconds",
        "When the last run that ended ok ended (absent when none is recorded).",
        registry=registry,
    )
    if stats.last_ok_run_end is None:
        registry.unregister(last_ok)
    else:
        last_ok.set(stats.last_ok_run_end.timestamp())
    runs = Gauge(
        "bgtaskex_runs_total",
        "Run records kept (see keep_finished, keep_failed), by outcome: ok, failed, "
        "storage, died, running, refused.",
        ["outcome"],
        registry=registry,
    )
    for outcome, count in stats.runs:
        runs.labels(outcome).set(count)
