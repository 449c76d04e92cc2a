"""What a caller checks before a run opens its store: the cheap start of `run-once`.

Cron calls `bgtaskex run-once` every minute, mostly to find nothing to do. These checks
answer that case, and refuse early what no run can do, without SQLAlchemy, the models or
user code: standard library only, like the modules they call (`run.preflight`,
`run.locks` and its file lock, `store.probe`, `run.signals`). They sit in the client
layer so that the CLI talks to nothing below it; `Client.run_once` does the rest.

What only a run with work needs (the lock's quick look, the signal handlers) is imported
when first asked for, not by the idle path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .run.preflight import check_runnable, import_declared
from .store.probe import record_idle_run, sqlite_idle_until

if TYPE_CHECKING:
    from datetime import datetime

    from .config import Settings
    from .plan import RunPlan
    from .run.signals import StopRequest, stop_on_signals

__all__ = [
    "StopRequest",
    "check_runnable",
    "idle_until",
    "import_declared",
    "nothing_due",
    "record_idle",
    "refuse_if_busy",
    "stop_on_signals",
]


def __getattr__(name: str) -> Any:
    """`StopRequest` and `stop_on_signals`, from `run.signals` when first asked for."""
    if name in ("StopRequest", "stop_on_signals"):
        from .run import signals

        return getattr(signals, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def nothing_due(settings: Settings, plan: RunPlan) -> bool:
    """True only when a run of `plan` surely has nothing to do: it is not a planned run
    (a process's callable or window starts it anyway), and the embedded SQLite database
    has no task due on the plan's queues and no ended task kept past
    `settings.keep_ended`. False means "start the run" (there is work, or no telling)."""
    return idle_until(settings, plan)[0]


def idle_until(settings: Settings, plan: RunPlan) -> tuple[bool, datetime | None]:
    """`nothing_due`, and when nothing is, when the next task of the plan's queues
    becomes due (None: no task waits for its time)."""
    if plan.planned:
        return False, None
    return sqlite_idle_until(settings.url, settings.keep_ended, routing=plan.routing)


def refuse_if_busy(settings: Settings, wait: float) -> None:
    """LockBusy now, before anything heavy is imported, when the run lock surely has
    another holder (the file lock); nothing when the run is to wait for the lock."""
    if not wait:
        from .run.locks import lock_for

        lock_for(settings.concurrency.lock).busy_before_start(settings)


def record_idle(settings: Settings, plan: RunPlan, started_at: datetime) -> str | None:
    """Record the run-once that `idle_until` answered on SQLite as an ok run that did
    nothing, so that "nothing to do" reads apart from "no run" (`bgtaskex runs`,
    `check`), deleting the run records past their retention as a full run would. Best
    effort, and without SQLAlchemy: one transaction. Returns the run id
    recorded, None when no record could be written."""
    import os
    from datetime import UTC
    from datetime import datetime as clock

    from .owner import holder_name, host_name

    run_id = os.urandom(4).hex()  # secrets.token_hex(4), without importing hashlib
    row = {
        "run_id": run_id,
        "process": plan.process,
        "holder": f"{holder_name()}/{run_id}"[:100],
        "host": host_name()[:255],
        "pid": os.getpid(),
        "lock": str(plan.lock),
        "started_at": started_at,
        "ended_at": clock.now(UTC),
        "budget": plan.budget,
        "outcome": "ok",
    }
    return run_id if record_idle_run(settings.url, row, settings.keep_ended) else None
