"""Retention rules from the config's `[[retention_rules]]` tables: "delete the rows of
table X older than N days" (or "that this condition selects"), in resumable chunks.

Parsing here is cheap and static (names, types, one of the two options); what needs the
application database (does the table exist, its key, its columns) is checked by
`bgtaskex.builtin.purge` when a rule is previewed, queued or run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .processes import Process
from .schedule import WeeklyWindow

DEFAULT_CHUNK_SIZE = 1000
MAX_CHUNK_SIZE = 10_000
RETENTION_QUEUE = "retention"
RETENTION_PROCESS = "retention"
PLANNER = "bgtaskex.builtin.retention:queue_due_rules"
PURGE_ACTION = "bgtaskex.builtin.retention:PurgeRows"
TASK_PREFIX = "retention:"

_NAME = re.compile(r"^[A-Za-z0-9][\w.-]{0,63}$")
_IDENTIFIER = re.compile(r"^[A-Za-z_][\w$]{0,62}(\.[A-Za-z_][\w$]{0,62})?$")
_CALLABLE = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
_PARAM = re.compile(r"^[A-Za-z_]\w*$")
_KEYS = {
    "name",
    "database",
    "table",
    "date_column",
    "older_than",
    "where",
    "params",
    "also_delete",
    "chunk_size",
    "enabled",
    "hooks",
}

#: The original extension's default: Sundays, 01:00-23:30, a 30 s budget per run.
DEFAULT_RETENTION_PROCESS = Process(
    name=RETENTION_PROCESS,
    queues=(RETENTION_QUEUE,),
    max_execution_time=30.0,
    every=60.0,
    window=WeeklyWindow("sun", "01:00", "23:30"),
    callable=PLANNER,
)


@dataclass(frozen=True, slots=True)
class ChildTable:
    """Rows of `table` whose `column` holds a deleted key go first, in the same chunk."""

    table: str
    column: str


@dataclass(frozen=True, slots=True)
class RetentionRule:
    """One `[[retention_rules]]` table of the config."""

    name: str
    table: str
    database: str | None = None  # None: bgtaskex's own database
    date_column: str | None = None
    older_than: float | None = None  # seconds
    where: str | None = None  # an SQL condition on `table`, with :named parameters
    params: tuple[tuple[str, Any], ...] = ()  # values bound to the condition's parameters
    also_delete: tuple[ChildTable, ...] = ()
    chunk_size: int = DEFAULT_CHUNK_SIZE
    enabled: bool = True
    hooks: tuple[str, ...] = ()  # "module:function", called after each committed chunk

    @property
    def task_name(self) -> str:
        return TASK_PREFIX + self.name

    def describe(self) -> str:
        """What the rule deletes, in one line (no secrets: no database URL)."""
        parts = []
        if self.date_column is not None and self.older_than is not None:
            parts.append(f"{self.date_column} older than {_days(self.older_than)}")
        if self.where is not None:
            parts.append(f"({self.where})")
        return f"rows of {self.table} where " + " and ".join(parts)


def _days(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def parse_rules(
    value: object, parse_duration: Callable[[object], float]
) -> tuple[RetentionRule, ...]:
    """Rules from the config's `[[retention_rules]]`; ValueError names the rule and the
    problem."""
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise ValueError("expected [[retention_rules]] tables")
    rules = tuple(_parse_one(table, i, parse_duration) for i, table in enumerate(value, 1))
    names = [r.name.lower() for r in rules]  # task names are matched in any case
    for rule in rules:
        if names.count(rule.name.lower()) > 1:
            raise ValueError(f"two retention rules are named {rule.name!r} (in any case)")
    return rules


def _parse_one(
    table: Mapping[str, Any], index: int, parse_duration: Callable[[object], float]
) -> RetentionRule:
    where = f"retention rule {table.get('name', index)!r}"

    def fail(problem: str) -> ValueError:
        return ValueError(f"{where}: {problem}")

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise fail(f"unknown key {unknown[0]!r}")
    name = table.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise fail("'name' must be letters, digits, '.', '-' or '_' (at most 64)")
    target = _identifier(table.get("table"), "table", fail, required=True)
    date_column = _identifier(table.get("date_column"), "date_column", fail)
    older_than = None
    if "older_than" in table:
        try:
            older_than = parse_duration(table["older_than"])
        except ValueError as err:
            raise fail(f"older_than: {err}") from None
    if (date_column is None) != (older_than is None):
        raise fail("give 'date_column' and 'older_than' together")
    condition = table.get("where")
    if condition is not None and (not isinstance(condition, str) or not condition.strip()):
        raise fail("'where' must be an SQL condition on the table")
    problem = where_problem(condition) if isinstance(condition, str) else None
    if problem is not None:
        raise fail(f"'where' must be one condition, {problem}")
    if date_column is None and condition is None:
        raise fail("give 'date_column' + 'older_than' or 'where' (or both)")
    params = table.get("params", {})
    if not isinstance(params, Mapping) or not all(
        isinstance(k, str) and _PARAM.match(k) for k in params
    ):
        raise fail("'params' must be a table of names to values, bound to :name in 'where'")
    reserved = sorted(k for k in params if k.lower().startswith("bgtaskex_"))
    if reserved:
        raise fail(f"params.{reserved[0]}: names starting with 'bgtaskex_' are reserved")
    if params and condition is None:
        raise fail("'params' are bound to 'where', which is missing")
    for key, param in params.items():
        if not isinstance(param, str | int | float | bool) and param is not None:
            raise fail(f"params.{key} must be a string, number or boolean")
    database = table.get("database")
    if database is not None and (not isinstance(database, str) or not database.strip()):
        raise fail("'database' must be a database URL")
    return RetentionRule(
        name=name,
        table=target or "",
        database=database.strip() if database else None,
        date_column=date_column,
        older_than=older_than,
        where=condition.strip() if condition else None,
        params=tuple(sorted(params.items())),
        also_delete=_children(table.get("also_delete", []), fail),
        chunk_size=_chunk_size(table.get("chunk_size", DEFAULT_CHUNK_SIZE), fail),
        enabled=_flag(table.get("enabled", True), "enabled", fail),
        hooks=_hooks(table.get("hooks", []), fail),
    )


def where_problem(condition: str) -> str | None:
    """Why `condition` could not stand as one term inside parentheses, or None.

    Every statement of a walk puts the condition in parentheses; this keeps it there. A
    comment would swallow the closing parenthesis, an unbalanced parenthesis would end
    the group early, a ';' would start another statement. Quotes are read both ways the
    backends read them: with backslash escapes (MySQL, PostgreSQL's E'...') and without
    (standard SQL); the condition must pass either way.
    """
    for backslash in (False, True):
        problem = _scan(condition, backslash)
        if problem is not None:
            return problem
    return None


def _scan(condition: str, backslash: bool) -> str | None:
    closing: list[str] = []  # the brackets still open, as the characters that close them
    at = 0
    while at < len(condition):
        char = condition[at]
        if char in "'\"`":
            end = _quote_end(condition, at, backslash and char != "`")
            if end is None:
                return f"with its quotes closed (a {char} is never closed)"
            at = end
            continue
        if condition.startswith(("--", "/*"), at) or char == "#":
            return "without comments ('--', '/*', '#'): they would swallow what follows"
        if char == ";":
            return "without ';' (outside quotes)"
        if char == "$" and (
            at == 0 or not (condition[at - 1].isalnum() or condition[at - 1] in "_$")
        ):
            return "without '$' quotes or '$n' parameters (use :name and 'params')"
        if char in "([":
            closing.append(")" if char == "(" else "]")
        elif char in ")]" and (not closing or closing.pop() != char):
            return f"with balanced parentheses (a {char!r} at character {at + 1} closes none)"
        at += 1
    if closing:
        return f"with balanced parentheses ({len(closing)} left open)"
    return None


def _quote_end(condition: str, start: int, backslash: bool) -> int | None:
    """Where the quoted text opened at `start` ends (past its closing quote); a doubled
    quote is a quote, and so, with `backslash`, is any character after a backslash."""
    quote = condition[start]
    at = start + 1
    while at < len(condition):
        char = condition[at]
        if backslash and char == "\\":
            at += 2
        elif char != quote:
            at += 1
        elif condition.startswith(quote * 2, at):
            at += 2
        else:
            return at + 1
    return None


def _identifier(
    value: object, key: str, fail: Callable[[str], ValueError], *, required: bool = False
) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not _IDENTIFIER.match(value):
        raise fail(f"'{key}' must be a table or column name (letters, digits, _), got {value!r}")
    return value


def _children(value: object, fail: Callable[[str], ValueError]) -> tuple[ChildTable, ...]:
    message = "'also_delete' must be a list of {table = ..., column = ...} tables"
    if not isinstance(value, list):
        raise fail(message)
    children = []
    for item in value:
        if not isinstance(item, Mapping) or set(item) != {"table", "column"}:
            raise fail(message)
        children.append(
            ChildTable(
                _identifier(item["table"], "also_delete.table", fail, required=True) or "",
                _identifier(item["column"], "also_delete.column", fail, required=True) or "",
            )
        )
    return tuple(children)


def _chunk_size(value: object, fail: Callable[[str], ValueError]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHUNK_SIZE:
        raise fail(f"'chunk_size' must be a whole number from 1 to {MAX_CHUNK_SIZE}")
    return value


def _flag(value: object, key: str, fail: Callable[[str], ValueError]) -> bool:
    if not isinstance(value, bool):
        raise fail(f"'{key}' must be true or false")
    return value


def _hooks(value: object, fail: Callable[[str], ValueError]) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(
        isinstance(h, str) and _CALLABLE.match(h) for h in value
    ):
        raise fail("'hooks' must be a list of 'package.module:function'")
    return tuple(value)
