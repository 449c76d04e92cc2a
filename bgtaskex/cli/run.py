"""The commands that run tasks: run-once (what cron calls), daemon, demo; and processes,
the scheduled processes the daemon runs.

`run-once` on an idle embedded database answers before SQLAlchemy, rich or the models are
imported (bgtaskex.startup); everything heavy is imported past that point.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, Any

import click

from ..exceptions import ConfigError, Interrupted, LockBusy, OutsideWindow, TasksLeftWaiting
from ..plan import RunPlan
from .common import State, duration, echo_json, pass_state, print_rich, remember

if TYPE_CHECKING:
    from datetime import datetime

    from ..config import Settings
    from ..models import RunSummary
    from ..processes import Process
    from ..startup import StopRequest


@click.command(
    "run-once",
    epilog="""\b
Examples:
  bgtaskex run-once                          # what crontab calls every minute
  bgtaskex run-once --max-execution-time 2m --wait 10
  bgtaskex run-once --json | jq .finished""",
)
@click.option(
    "--max-execution-time",
    metavar="SECONDS",
    envvar="BGTASKEX_MAX_EXECUTION_TIME",
    callback=remember,
    expose_value=False,
    help="Budget of the whole run (default 30; also 45s, 2m).",
)
@click.option(
    "--kill-after",
    metavar="SECONDS",
    envvar="BGTASKEX_KILL_AFTER",
    callback=remember,
    expose_value=False,
    help="End the run (exit 7) when a hook runs this long past the deadline (default 60; never).",
)
@click.option(
    "--lock-file",
    metavar="FILE",
    envvar="BGTASKEX_LOCK_FILE",
    callback=remember,
    expose_value=False,
    help="Lock file (default: next to the SQLite database).",
)
@click.option(
    "--wait",
    metavar="DURATION",
    callback=duration,
    default="0",
    help="Wait this long for the lock (10, 10s, 1m) instead of giving up at once.",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Live progress bars (default: on when stdout is a terminal).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the run report as one JSON object.")
@click.option(
    "--process",
    "process_name",
    metavar="NAME",
    help="Run as this scheduled process: its queues, budget, window and callable.",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary line.")
@pass_state
def run_once(
    state: State,
    process_name: str | None,
    wait: float,
    progress: bool | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Process due tasks for at most --max-execution-time seconds (what cron calls).

    If another run holds the lock, say so in one line and exit 0. SIGTERM or Ctrl-C lets
    the current hook finish and starts nothing new; a second one stops at once. Tasks
    left waiting because their module cannot be imported: exit 6.
    """
    settings = state.settings()
    process = settings.process(process_name) if process_name else None
    began = time.monotonic()
    started_at = _now()
    from ..startup import check_runnable, idle_until

    try:
        check_runnable(settings)  # a deploy slip is exit 2 even when nothing is due
    except ConfigError as refused:
        _record_refused(state, process, refused, started_at)
        raise
    plan = _plan(settings, process, wait)
    idle, next_due = False, None
    if not isinstance(plan, OutsideWindow):
        idle, next_due = idle_until(settings, plan)
    if idle and not isinstance(plan, OutsideWindow):
        from ..startup import record_idle

        run_id = record_idle(settings, plan, started_at)
        elapsed = time.monotonic() - began
        due = _iso(next_due)
        if as_json:
            report = {"run_id": run_id, "idle": True, "elapsed": elapsed, "next_due_at": due}
            click.echo(json.dumps(report))
        elif not quiet:
            click.echo(f"nothing due ({elapsed:.2f}s)" + (f"; next due at {due}" if due else ""))
        return
    live = sys.stdout.isatty() if progress is None else progress
    try:
        summary, stop = _run(state, process, plan, wait, live=live and not as_json)
    except LockBusy as busy:
        if not as_json:
            raise
        click.echo(json.dumps({"run_id": None, "locked": True, "holder": busy.holder}))
        return
    except OutsideWindow as outside:
        if not as_json:
            raise
        click.echo(json.dumps({"run_id": None, "outside_window": True, "message": str(outside)}))
        return
    next_due = None
    if as_json and not summary.actions:  # found nothing due: say when something will be
        next_due = state.client().next_due_at(None if isinstance(plan, OutsideWindow) else plan)
    _report(summary, stop, as_json=as_json, quiet=quiet, next_due=next_due)


def _record_refused(
    state: State, process: Process | None, refused: ConfigError, started_at: datetime
) -> None:
    """Record a run refused at start, so that `check` and `runs --failed` tell; best
    effort: the refusal is what the caller must see."""
    import logging

    try:
        state.client(readonly=True).record_refused(refused, process=process, started_at=started_at)
    except Exception as err:  # the database may be down too
        logging.getLogger("bgtaskex.runner").debug("refused start not recorded: %s", err)


def _now() -> datetime:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    """An instant as ISO-8601 UTC with a Z, as the JSON reports write them."""
    from datetime import UTC

    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _plan(settings: Settings, process: Process | None, wait: float) -> RunPlan | OutsideWindow:
    """The run's plan; or, outside the process's window, the OutsideWindow to raise once
    the checks of a run have passed (a deploy slip or a database down still says so)."""
    try:
        return RunPlan.of(settings, process, wait=wait)
    except OutsideWindow as outside:
        return outside


def _run(
    state: State,
    process: Process | None,
    plan: RunPlan | OutsideWindow,
    wait: float,
    *,
    live: bool,
) -> tuple[RunSummary, StopRequest]:
    """The lock's quick look, the declared modules, the database, then the run itself,
    stopping cleanly on SIGTERM or SIGINT."""
    import signal

    from ..startup import StopRequest, import_declared, refuse_if_busy, stop_on_signals

    settings = state.settings()
    refuse_if_busy(settings, wait)
    try:
        import_declared(settings)
    except ConfigError as refused:
        _record_refused(state, process, refused, _now())
        raise
    client = state.client()
    observer = None
    if live:
        from .live import LiveProgress

        observer = LiveProgress()
    stop = StopRequest()
    try:
        if isinstance(plan, OutsideWindow) or plan.not_after is not None:
            # The window as it is now, after the imports and the database: it may
            # have closed (or opened) meanwhile.
            plan = RunPlan.of(settings, process, wait=wait)
        with stop_on_signals(stop, (signal.SIGTERM, signal.SIGINT)):
            return client.run_once(plan=plan, stop=stop, observer=observer), stop
    finally:
        if observer is not None:
            observer.close()


def _report(
    summary: RunSummary,
    stop: StopRequest,
    *,
    as_json: bool,
    quiet: bool,
    next_due: datetime | None = None,
) -> None:
    import signal

    if as_json:
        from ..views import summary_dict

        click.echo(json.dumps({**summary_dict(summary), "next_due_at": _iso(next_due)}))
    elif not quiet:
        click.echo(summary.line())
    if stop.signum == signal.SIGINT:
        raise Interrupted  # the run stopped cleanly; still, the user interrupted it
    if summary.left_waiting:  # exit 6, so that cron mails the deploy slip
        raise TasksLeftWaiting(summary.left_waiting, summary.missing_modules)


@click.command(
    epilog="""\b
Examples:
  bgtaskex processes
  bgtaskex --config /etc/bgtaskex/bgtaskex.toml processes --json""",
)
@click.option("--json", "as_json", is_flag=True, help="As a JSON array.")
@pass_state
def processes(state: State, as_json: bool) -> None:
    """The scheduled processes of the config, with their next occurrence."""
    from ..render_ops import render_processes
    from ..views import process_dict
    from ..walltime import local_now

    now = local_now()
    rows = [process_dict(p, p.next_occurrence(now)) for p in state.settings().scheduled]
    if as_json:
        echo_json(rows)
    else:
        print_rich(render_processes(rows))


@click.command(
    epilog="""\b
Examples:
  bgtaskex daemon
  bgtaskex --config /etc/bgtaskex/bgtaskex.toml --log-format json daemon
  systemctl start bgtaskex            # see systemd/bgtaskex.service""",
)
@pass_state
def daemon(state: State) -> None:
    """Run the scheduled processes until SIGTERM or Ctrl-C (then stop gracefully).

    SIGHUP reloads the config between runs. Under systemd (Type=notify) it reports
    readiness, status and watchdog pings.
    """
    from ..client import Client, connect
    from ..daemon import Daemon

    def load() -> tuple[Any, Client]:
        from ..startup import check_runnable, import_declared

        state.reload()
        settings = state.settings()
        check_runnable(settings)  # at start: exit 2; at a reload: the old config stays
        import_declared(settings)
        return settings, connect(settings=settings, trust_refs=False)

    # 0 when it stops on SIGTERM, 130 on Ctrl-C; a run stuck past stop_timeout exits itself
    daemon = Daemon(load)
    if daemon.serve() == Interrupted.exit_code:
        raise Interrupted  # the daemon stopped cleanly; still, the user interrupted it
    if daemon.failure is not None:
        raise daemon.failure  # it stopped itself (its SQLite file deleted): exit 4


@click.command(
    epilog="""\b
Examples:
  bgtaskex demo
  bgtaskex demo --budget 0.3 --max-runs 100""",
)
@click.option(
    "--budget",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="max_execution_time of each run, in seconds.",
)
@click.option("--max-runs", type=click.IntRange(min=1), default=60, show_default=True)
@pass_state
def demo(state: State, budget: float, max_runs: int) -> None:
    """Queue an example task of chunked actions and run it to the end in short runs."""
    from ..demo import run_demo

    run_demo(state.client(), budget=budget, max_runs=max_runs, echo=click.echo)
