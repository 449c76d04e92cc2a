"""What a caller gives the Client, checked before anything is stored: the actions of a
task, its name, type and queue, a unique key, a not_before, a pause's reason, status
names. Each refusal is a UsageError (exit 2) naming the value."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .config import MAX_DURATION, params_problem, params_size
from .exceptions import ParamsTooLarge, UsageError
from .models import ACTIVE_STATUSES, TERMINAL, NewAction, TaskFilter, TaskType
from .urls import mask_secrets

ActionSpec = str | tuple[str, Mapping[str, Any]] | NewAction | Mapping[str, Any]


def parse_actions(
    specs: Iterable[ActionSpec], *, max_params_bytes: int | None = None
) -> tuple[NewAction, ...]:
    """Normalise `"mod:Class"`, `("mod:Class", {params})`, `{"ref":..,"params":..}` and
    `NewAction` to NewAction, checking that params are JSON objects (of at most
    `max_params_bytes`, see `config.params_size`: ParamsTooLarge otherwise)."""
    if isinstance(specs, str | bytes):
        raise UsageError("actions must be a list of refs, not a single string")
    parsed: list[NewAction] = []
    ref: object
    params: object
    for spec in specs:
        if isinstance(spec, NewAction):
            ref, params = spec.ref, spec.params
        elif isinstance(spec, str):
            ref, params = spec, {}
        elif isinstance(spec, Mapping):
            unknown = set(spec) - {"ref", "params"}
            if unknown or "ref" not in spec:
                raise UsageError(
                    f"an action object needs 'ref' and optional 'params', got keys {sorted(spec)}"
                )
            ref, params = spec["ref"], spec.get("params") or {}
        elif isinstance(spec, tuple | list) and len(spec) == 2:
            ref, params = spec[0], spec[1]
        else:
            raise UsageError(f"cannot read action {spec!r}: use 'module:Class' or (ref, params)")
        if not isinstance(ref, str):
            raise UsageError(f"action ref must be a string, got {ref!r}")
        if not isinstance(params, Mapping):
            raise UsageError(
                f"params of {ref!r} must be a JSON object, got {type(params).__name__}"
            )
        try:
            checked = json.loads(json.dumps(dict(params), allow_nan=False))
        except (TypeError, ValueError) as err:
            raise UsageError(f"params of {ref!r} are not JSON: {err}") from None
        except RecursionError:
            raise UsageError(f"params of {ref!r} are nested too deeply") from None
        problem = params_problem(checked)
        if problem is not None:
            raise UsageError(f"params of {ref!r} cannot be stored: {problem}")
        if max_params_bytes is not None:
            size = params_size(checked)
            if size > max_params_bytes:
                raise ParamsTooLarge(ref, size, max_params_bytes)
        parsed.append(NewAction(ref, checked))
    if not parsed:
        raise UsageError("a task needs at least one action")
    return tuple(parsed)


def _text(value: str) -> bool:
    """Whether `value` can be stored: valid Unicode (no lone surrogate, as a non-UTF-8
    byte of argv or a JSON \\ud800 escape gives)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _has_control(value: str) -> bool:
    """Whether `value` holds a control character (C0, DEL, C1): a newline or a tab in
    a name would break the one-line outputs (`list` rows, `check`, log lines)."""
    return any(ord(c) < 32 or 127 <= ord(c) < 160 for c in value)


def check_unique_key(key: object) -> None:
    """Refuse a unique key that the backends would not all compare exactly: empty,
    longer than 200 characters, with leading or trailing whitespace (MariaDB's and MySQL
    5.7's utf8mb4_bin ignores trailing spaces: 'k' and 'k ' would be one key there) or a
    control character."""
    if (
        not isinstance(key, str)
        or not key
        or len(key) > 200
        or key != key.strip()
        or _has_control(key)
        or not _text(key)
    ):
        raise UsageError(
            "unique key must be a non-empty string of at most 200 characters, without "
            f"leading or trailing whitespace or control characters, got {key!r}"
        )


def _name_ok(value: object, longest: int) -> bool:
    """Whether `value` can name a task or a queue: text of 1 to `longest` characters
    once stripped (as stored), without a control character."""
    if not isinstance(value, str) or len(value) > longest or not _text(value):
        return False
    stripped = value.strip()
    return bool(stripped) and not _has_control(stripped)


def check_queue(queue: object) -> str:
    """The queue name `queue` stands for (stripped, as enqueue stores it); UsageError
    for one enqueue would refuse."""
    if not _name_ok(queue, 100):
        raise UsageError(
            "queue must be a non-empty string of at most 100 characters, without control "
            f"characters, got {queue!r}"
        )
    assert isinstance(queue, str)
    return queue.strip()


def check_task_fields(name: object, type: object, queue: object) -> TaskType:
    if not _name_ok(name, 200):
        raise UsageError(
            "task name must be a non-empty string of at most 200 characters, without "
            f"control characters, got {name!r}"
        )
    check_queue(queue)
    try:
        return TaskType(str(type))
    except ValueError:
        raise UsageError(f"task type must be 'interactive' or 'cron', got {type!r}") from None


def pause_reason(reason: object) -> str | None:
    """A pause's reason as stored: on one line (whitespace folded), secrets masked, at
    most 500 characters, no other control character (an escape sequence would reach
    the other operators' terminals); None for none (or blank)."""
    if reason is None:
        return None
    if not isinstance(reason, str) or not _text(reason):
        raise UsageError(f"a pause's reason must be text, got {reason!r}")
    line = " ".join(mask_secrets(reason).split())
    if _has_control(line):
        raise UsageError(
            f"a pause's reason must not hold control characters (escape sequences), got {reason!r}"
        )
    if len(line) > 500:
        raise UsageError(f"a pause's reason is at most 500 characters, got {len(line)}")
    return line or None


#: A not_before from then on is refused: a year short of datetime.max leaves room to show
#: it in any zone and to add to it.
_LAST_YEAR = datetime(9999, 1, 1, tzinfo=UTC)


def not_before_moment(value: object) -> datetime | None:
    """An aware datetime before year 9999, or now + a timedelta of at most 100 years
    (MAX_DURATION); UsageError for a naive datetime or one out of range."""
    if value is None:
        return None
    if not isinstance(value, datetime | timedelta):
        raise UsageError(f"not_before must be a datetime or a timedelta, got {value!r}")
    if isinstance(value, datetime) and (value.tzinfo is None or value.utcoffset() is None):
        raise UsageError(
            f"not_before must be timezone-aware (a naive datetime is ambiguous), got {value!r}"
        )
    moment: datetime | None = None
    with contextlib.suppress(OverflowError):
        if isinstance(value, datetime):
            moment = value.astimezone(UTC)
        elif value <= timedelta(seconds=MAX_DURATION):
            moment = datetime.now(UTC) + value
    if moment is None or moment >= _LAST_YEAR:
        shown = value.isoformat() if isinstance(value, datetime) else repr(value)
        raise UsageError(
            f"not_before out of range (a date before 9999, a delay of at most 100 years): {shown}"
        )
    return moment


def expand_statuses(statuses: Iterable[str]) -> frozenset[str]:
    """Check status names; "active" stands for every status that is not terminal."""
    known = {s.value for s in TERMINAL | ACTIVE_STATUSES}
    found: set[str] = set()
    for status in statuses:
        if status == "active":
            found |= {s.value for s in ACTIVE_STATUSES}
        elif status in known:
            found.add(status)
        else:
            raise UsageError(
                f"unknown status {status!r}; expected active or one of {', '.join(sorted(known))}"
            )
    return frozenset(found)


TASK_TYPES = ("interactive", "cron")


def filter_text(what: str, value: object, longest: int) -> str:
    """A filter's text (a queue, a name glob, a process): what no name holds (a control
    character, more than `longest` characters) could match nothing, and would reach the
    database as an error of its own (PostgreSQL refuses a NUL in any text), so it is
    refused here as bad input."""
    if isinstance(value, str) and len(value) <= longest and not _has_control(value):
        return value
    shown = repr(value)
    shown = shown if len(shown) <= 60 else f"{shown[:60]}... ({len(shown)} characters)"
    raise UsageError(
        f"{what} must be text of at most {longest} characters, without control "
        f"characters, got {shown}"
    )


def task_filter(
    statuses: Iterable[str] = (),
    types: Iterable[str] = (),
    queues: Iterable[str] = (),
    name_glob: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ended_before: datetime | None = None,
) -> TaskFilter:
    """The `TaskFilter` of the filters of `bgtaskex list` (and of the web's Tasks page):
    statuses checked ("active": every status not ended), types among `TASK_TYPES`; an
    empty selection means any."""
    statuses, types, queues = tuple(statuses), tuple(types), tuple(queues)
    for queue in queues:
        filter_text("queue", queue, 100)
    if name_glob is not None:
        # SQLite refuses a LIKE pattern over 50,000 bytes: no task name (200 characters
        # at most) needs a glob that long
        filter_text("name glob", name_glob, 1000)
    for kind in types:
        if kind not in TASK_TYPES:
            raise UsageError(f"unknown type {kind!r}; expected one of {', '.join(TASK_TYPES)}")
    return TaskFilter(
        statuses=expand_statuses(statuses) if statuses else None,
        types=frozenset(types) or None,
        queues=frozenset(queues) or None,
        name_glob=name_glob,
        since=since,
        until=until,
        ended_before=ended_before,
    )


def whole_number(name: str, value: object, lowest: int, highest: int) -> int:
    """`value` when it is a whole number within [lowest, highest] (a page's limit, a
    count, hours of activity); UsageError naming `name` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise UsageError(f"{name} must be a whole number from {lowest} to {highest}, got {value!r}")
    return value
