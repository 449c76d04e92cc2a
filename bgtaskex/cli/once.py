"""What `bgtaskex run-once` does, without click: the idle answer of `bgtaskex.startup`,
else the run itself, and its report.

The click command (cli/run.py) and the click-free start (cli/fast.py) both call
`run_once_command`, each with its own `echo`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..exceptions import ConfigError, Interrupted, LockBusy, OutsideWindow, TasksLeftWaiting
from ..plan import RunPlan
from .state import State

if TYPE_CHECKING:
    from datetime import datetime

    from ..config import Settings
    from ..models import RunSummary
    from ..processes import Process
    from ..startup import StopRequest

#: Writes one line on stdout (click.echo, or its stand-in without click).
Echo = Callable[[str], None]


def run_once_command(
    state: State,
    process_name: str | None,
    wait: float,
    *,
    progress: bool | None,
    as_json: bool,
    quiet: bool,
    echo: Echo,
) -> None:
    """`run-once`: process due tasks for at most the budget, or say that nothing is due."""
    settings = state.settings()
    process = settings.process(process_name) if process_name else None
    began = time.monotonic()
    started_at = _now()
    from ..startup import check_runnable, idle_until

    try:
        check_runnable(settings)  # a deploy slip is exit 2 even when nothing is due
    except ConfigError as refused:
        state.start_logging()
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
            echo(json.dumps(report))
        elif not quiet:
            echo(f"nothing due ({elapsed:.2f}s)" + (f"; next due at {due}" if due else ""))
        return
    state.start_logging()
    live = sys.stdout.isatty() if progress is None else progress
    try:
        summary, stop = _run(state, process, plan, wait, live=live and not as_json)
    except LockBusy as busy:
        if not as_json:
            raise
        echo(json.dumps({"run_id": None, "locked": True, "holder": busy.holder}))
        return
    except OutsideWindow as outside:
        if not as_json:
            raise
        echo(json.dumps({"run_id": None, "outside_window": True, "message": str(outside)}))
        return
    next_due = None
    if as_json and not summary.actions:  # found nothing due: say when something will be
        next_due = state.client().next_due_at(None if isinstance(plan, OutsideWindow) else plan)
    _report(summary, stop, as_json=as_json, quiet=quiet, next_due=next_due, echo=echo)


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
    echo: Echo,
) -> None:
    import signal

    if as_json:
        from ..views import summary_dict

        echo(json.dumps({**summary_dict(summary), "next_due_at": _iso(next_due)}))
    elif not quiet:
        echo(summary.line())
    if stop.signum == signal.SIGINT:
        raise Interrupted  # the run stopped cleanly; still, the user interrupted it
    if summary.left_waiting:  # exit 6, so that cron mails the deploy slip
        raise TasksLeftWaiting(summary.left_waiting, summary.missing_modules)
