"""The Tasks page's query string and the `TaskFilter` it stands for: the filters of
`bgtaskex list` (`status`, `type` and `queue`, each repeatable; `name`, a glob; `since`
and `until`, a WHEN), read with the same functions and refused with the same words
(a UsageError: a 400 page or JSON error)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from ..config import parse_when
from ..exceptions import UsageError
from ..inputs import task_filter
from ..models import TaskFilter

#: The filter keys of the query string, in the order links write them.
KEYS = ("status", "type", "queue", "name", "since", "until")
_REPEATABLE = ("status", "type", "queue")


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """A Tasks page's filters: the `TaskFilter`, and the query items as given (blank
    ones dropped), to write links that keep them."""

    where: TaskFilter
    items: tuple[tuple[str, str], ...] = ()

    def values(self, key: str) -> list[str]:
        return [value for k, value in self.items if k == key]

    def value(self, key: str) -> str:
        found = self.values(key)
        return found[-1] if found else ""

    def query(self, **more: str | int | None) -> str:
        """The query string of these filters plus `more` (None values left out), with
        its leading `?`; empty when there is nothing to say."""
        items = list(self.items) + [(k, str(v)) for k, v in more.items() if v is not None]
        return "?" + urlencode(items) if items else ""

    @property
    def filtered(self) -> bool:
        return bool(self.items)


def _when(key: str, text: str) -> datetime:
    try:
        return parse_when(text)
    except ValueError as err:
        raise UsageError(f"{key}: {err}") from None


def parse_query(pairs: Iterable[tuple[str, str]]) -> TaskQuery:
    """The TaskQuery of a query string's items (other keys are left to the caller).
    UsageError for a bad status, type or date, as `bgtaskex list` says it."""
    items = tuple((k, v.strip()) for k, v in pairs if k in KEYS and v.strip())
    single = {k: v for k, v in items if k not in _REPEATABLE}
    for key in single:
        if sum(1 for k, _ in items if k == key) > 1:
            raise UsageError(f"{key} is given more than once; give it once")
    where = task_filter(
        statuses=[v for k, v in items if k == "status"],
        types=[v for k, v in items if k == "type"],
        queues=[v for k, v in items if k == "queue"],
        name_glob=single.get("name"),
        since=_when("since", single["since"]) if "since" in single else None,
        until=_when("until", single["until"]) if "until" in single else None,
    )
    return TaskQuery(where, items)


def positive_int(key: str, text: str | None, *, default: int | None = None) -> int | None:
    """A query parameter that must be a whole number >= 1 (a cursor, a count)."""
    if text is None or not text.strip():
        return default
    try:
        number = int(text.strip())
    except ValueError:
        number = 0
    if number < 1 or number > 2**62:
        raise UsageError(f"{key} must be a whole number >= 1, got {text!r}")
    return number
