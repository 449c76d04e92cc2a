"""Actions ended per hour (`Store.activity`: the dashboard's chart of work done and
failed), from the actions' `ended_at`, as `stats` counts its last hour and day.

One grouped read of the range of ix_actions_status_ended_at that the hours cover, per
status, index only: its cost is the actions that ended within the window, not the
history kept. An action a retry put back in the queue no longer counts as failed (its
end is cleared), as in `stats`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, func, literal_column, select

from .. import tables as t
from ..models import ActionStatus, HourActivity

_HOUR = "%Y-%m-%d %H"


def hour_text(dialect: str, column: Any) -> Any:
    """`column` (a UTC timestamp) as the text `YYYY-MM-DD HH` of its hour, in UTC."""
    if dialect == "postgresql":
        utc = column.op("AT TIME ZONE")(literal_column("'UTC'"))
        return func.to_char(utc, "YYYY-MM-DD HH24")
    if dialect in t.MYSQL:  # stored as naive UTC
        return func.date_format(column, _HOUR)
    return func.strftime(_HOUR, column)  # SQLite: naive UTC text


def activity(conn: Connection, first: datetime, hours: int) -> list[HourActivity]:
    """The actions ended done and failed in each of `hours` hours from `first` (the
    start of an hour, UTC), oldest first, zeros included."""
    a = t.actions.c
    end = first + timedelta(hours=hours)
    hour = hour_text(conn.dialect.name, a.ended_at).label("hour")
    statuses = (ActionStatus.DONE.value, ActionStatus.FAILED.value)
    query = (
        select(a.status, hour, func.count())
        .where(a.status.in_(statuses), a.ended_at >= first, a.ended_at < end)
        .group_by(a.status, hour)
    )
    counts: dict[tuple[str, datetime], int] = {}
    for status, text, n in conn.execute(query):
        at = datetime.strptime(text, _HOUR).replace(tzinfo=UTC)
        counts[(status, at)] = int(n)
    found = []
    for i in range(hours):
        at = first + timedelta(hours=i)
        done = counts.get((ActionStatus.DONE.value, at), 0)
        found.append(HourActivity(at, done, counts.get((ActionStatus.FAILED.value, at), 0)))
    return found
