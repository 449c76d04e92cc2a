"""What `list` says of a task in plain words: `execute died (2/5), retry at 14:05:00 UTC`,
`waiting for module myapp.jobs (not declared)`, `failed: ValueError: bad row`,
`queue paused (since 14:05:00 UTC, maintenance)`, and
which action that is about (the failed one, or the one a run takes next).

Worked out from what `list` read already (the task and its actions, its claim, the
paused queues), with nothing imported: a module is looked for as `check` does
(run.preflight.findable).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime

from .config import Settings
from .exceptions import InvalidRef
from .models import (
    TERMINAL,
    ActionRecord,
    ActionStatus,
    QueuePause,
    Task,
    TaskState,
    TaskStatus,
)
from .owner import holder_is_gone
from .registry import Registry, parse_ref
from .run.failures import STORAGE
from .run.preflight import ModuleProblem


def max_attempts_of(ref: str, registry: Registry, settings: Settings) -> int:
    """The action's own `max_attempts` when its class is imported already (nothing is
    imported for `list`), else the setting."""
    try:
        module = parse_ref(ref)[0]
        if module in sys.modules and registry.allowed(module):
            return registry.resolve(ref).max_attempts or settings.max_attempts
    except InvalidRef:
        pass
    return settings.max_attempts


def shown_action(task: Task) -> ActionRecord | None:
    """The action `list` shows: a failed task's first failed action; a task still to
    run, the action a run takes next; else its current action."""
    if task.status == TaskStatus.FAILED:
        failed = [a for a in task.actions if a.status == ActionStatus.FAILED]
        if failed:
            return failed[0]
    elif task.status not in TERMINAL:
        for action in task.actions:
            if not (isinstance(action.status, ActionStatus) and action.status.ended):
                return action
    return task.current_action


def task_state(
    task: Task,
    problem: ModuleProblem,
    max_attempts: Callable[[str], int],
    now: datetime | None = None,
    pauses: Mapping[str, QueuePause] | None = None,
) -> TaskState:
    """The state of `task` (see `TaskState`); `pauses`: the paused queues, by name."""
    now = now or datetime.now(UTC)
    action = shown_action(task)
    status = task.status
    limit = max_attempts(action.ref) if action is not None else None
    if not isinstance(status, TaskStatus):  # a row of a release this one does not know
        return TaskState("unknown", str(status), action, _attempts(action), limit)
    if status.terminal:
        text = str(status)
        if status == TaskStatus.FAILED:
            why = action.last_failure if action is not None else None
            text = f"failed: {_short(why)}" if why else _failed_at(action)
        return TaskState(str(status), text, action, _attempts(action), limit)
    state = TaskState("due", "due", action, _attempts(action), limit)
    live = (
        task.lease_until is not None
        and task.lease_until > now
        and not holder_is_gone(task.claimed_by)
    )
    later = task.not_before if task.not_before and task.not_before > now else None
    if task.cancel_requested_at is not None:
        return _with(state, "cancel_requested", "cancel requested: the run ends it")
    if live and status != TaskStatus.CREATED and status != TaskStatus.PAUSED:
        hook = {TaskStatus.STARTING: "init_params", TaskStatus.RECOVERING: "change_params_on_error"}
        return _with(state, "executing", f"in {hook.get(status, 'execute')} now")
    pause = (pauses or {}).get(task.queue)
    if pause is not None:  # no run takes it, whatever else holds it back
        why = f", {pause.reason}" if pause.reason else ""
        text = f"queue paused (since {_clock(pause.paused_at, now)}{why})"
        return _with(state, "queue_paused", text, later)
    module = _module_of(action)
    why = problem(module) if module is not None else None
    if why is not None:
        text = f"waiting for module {module} ({why})"
        return TaskState("waiting_for_module", text, action, state.attempts, limit, later, module)
    if action is None:
        return _with(state, "due", f"due at {_clock(later, now)}" if later else "due", later)
    return _waiting(state, task, action, limit, later, now)


def _waiting(
    state: TaskState,
    task: Task,
    action: ActionRecord,
    limit: int | None,
    later: datetime | None,
    now: datetime,
) -> TaskState:
    """A task no run is in a hook of: when and how a run takes it again."""
    status, failure = task.status, action.last_failure
    when = f"retry at {_clock(later, now)}" if later else "retry at the next run"
    match status:
        case TaskStatus.RUNNING if (failure or "").startswith(STORAGE):
            return _with(state, "died", "execute ended by a storage outage: resumes", later)
        case TaskStatus.RUNNING:
            death = action.attempts + 1  # the next run counts it
            if limit is not None and death >= limit:
                when = "fails at the next run"
            died = _with(state, "died", f"execute died ({death}/{limit}), {when}", later)
            return replace(died, attempts=death)
        case TaskStatus.STARTING:
            return _with(state, "died", "init_params died: the action fails at the next run")
        case TaskStatus.RECOVERING:
            text = "change_params_on_error died: the action fails at the next run"
            return _with(state, "died", text)
        case TaskStatus.PAUSED if later is not None and failure:
            return _with(state, "died", f"execute died ({action.attempts}/{limit}), {when}", later)
        case TaskStatus.PAUSED if later is not None:
            return _with(state, "snoozed", f"snoozed until {_clock(later, now)}", later)
        case TaskStatus.PAUSED:
            return _with(state, "paused", "paused: execute goes on at the next run")
    if later is not None:
        return _with(state, "delayed", f"due at {_clock(later, now)}", later)
    return state


def _with(state: TaskState, kind: str, text: str, at: datetime | None = None) -> TaskState:
    return replace(state, kind=kind, text=text, at=at)


def _attempts(action: ActionRecord | None) -> int:
    return action.attempts if action is not None else 0


def _module_of(action: ActionRecord | None) -> str | None:
    if action is None:
        return None
    try:
        return parse_ref(action.ref)[0]
    except InvalidRef:
        return None  # not a module's fault: the run fails such an action


def _failed_at(action: ActionRecord | None) -> str:
    return "failed" if action is None else f"failed at action {action.rank}"


def _short(text: str, width: int = 60) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= width else line[: width - 1] + "…"


def _clock(at: datetime, now: datetime) -> str:
    """`14:05:00 UTC` today (UTC), `2026-12-24 06:00 UTC` another day."""
    at = at.astimezone(UTC)
    same_day = at.date() == now.astimezone(UTC).date()
    return at.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M UTC")
