"""The SQLAlchemy Core schema: every table and index, and the dialect differences."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Dialect,
    Double,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

# The dialect names of MySQL and MariaDB (`mysql+pymysql://` or `mariadb+pymysql://`).
MYSQL = ("mysql", "mariadb")

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid); elsewhere ids are 64-bit.
Id = BigInteger().with_variant(Integer(), "sqlite")

# A float is a double everywhere: MySQL's FLOAT is single precision (7 digits).
Real = Float().with_variant(Double(), *MYSQL)


def Str(length: int) -> String:
    """VARCHAR(length), in UTF-8 and compared byte for byte on every backend. MySQL's and
    MariaDB's default collations ignore case (and accents): queue "Reports" would be
    queue "reports" there, not on SQLite or PostgreSQL. utf8mb4_bin keeps them apart,
    and its character set holds any text whatever the database's default."""
    return String(length).with_variant(String(length, collation="utf8mb4_bin"), *MYSQL)


class LongStr(TypeDecorator[str]):
    """TEXT. MySQL and MariaDB: MEDIUMTEXT in UTF-8, as their TEXT holds 64 KiB only (an
    error message or a traceback may be longer) and takes the database's character set
    (latin1 by default before MariaDB 11.6). The MySQL dialect is imported only there."""

    impl = Text
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in MYSQL:
            from sqlalchemy.dialects.mysql import MEDIUMTEXT

            return dialect.type_descriptor(MEDIUMTEXT(collation="utf8mb4_bin"))
        return super().load_dialect_impl(dialect)


class Params(TypeDecorator[Any]):
    """A JSON object: JSONB on PostgreSQL, JSON elsewhere (text on SQLite, and on MariaDB
    LONGTEXT with a JSON_VALID check).

    The PostgreSQL dialect is imported only when it is used: SQLite runs skip its cost.
    """

    impl = JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored in UTC and always come back timezone-aware.

    MySQL and MariaDB: DATETIME(6), as their DATETIME drops the microseconds (the MySQL
    dialect is imported only there, as for JSONB)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in MYSQL:
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return super().load_dialect_impl(dialect)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        # SQLite and MySQL keep no offset: store naive UTC there.
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


tasks = Table(
    "bgtaskex_tasks",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", Str(200), nullable=False),
    Column("type", Str(16), nullable=False),
    Column("queue", Str(100), nullable=False),
    Column("status", Str(16), nullable=False),
    # models.run_order(type, status): NULL once the task has ended, so the run's
    # "next task" query is a range scan of a small partial index.
    Column("run_order", SmallInteger, nullable=True),
    Column("current_rank", Integer, nullable=True),
    # The run that last wrote the task: a run does not take a task twice.
    Column("last_run_id", Str(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    # Set by `bgtaskex cancel` while a run may be executing the task: the run ends it
    # as cancelled at its next write (checkpoint or hook return).
    Column("cancel_requested_at", UTCDateTime, nullable=True),
    # Claims (concurrency lock = "none"): the worker holding the task, a fencing token
    # that grows with every claim (a write carrying an older one is refused), and the
    # end of the lease, after which another worker may take the task over.
    Column("claimed_by", Str(100), nullable=True),
    Column("claim_token", BigInteger, nullable=False, server_default="0"),
    Column("lease_until", UTCDateTime, nullable=True),
    # Not due before then: a delayed task (enqueue not_before), a snoozed one, a retry's
    # backoff. NULL: due now.
    Column("not_before", UTCDateTime, nullable=True),
    # The key of a unique task while it has not ended (unique index below): set to NULL
    # by every write that ends the task, so the key is free again.
    Column("unique_key", Str(200), nullable=True),
    # SQLite: ids are never reused, even once the newest tasks were purged (`show N`).
    sqlite_autoincrement=True,
)
# The due-task query: the waiting tasks in run order, not_before filtered in the index.
Index(
    "ix_bgtaskex_tasks_due",
    tasks.c.run_order,
    tasks.c.id,
    tasks.c.not_before,
    sqlite_where=tasks.c.run_order.isnot(None),
)
# `list`: the ended tasks, newest first, without walking the waiting ones.
Index(
    "ix_bgtaskex_tasks_ended",
    tasks.c.id,
    sqlite_where=tasks.c.run_order.is_(None),
)
# A run serving some queues only (a scheduled process): their waiting tasks in run order.
Index(
    "ix_bgtaskex_tasks_queue_due",
    tasks.c.queue,
    tasks.c.run_order,
    tasks.c.id,
    tasks.c.not_before,
    sqlite_where=tasks.c.run_order.isnot(None),
)
# One waiting task per key: NULLs never collide (SQLite, PostgreSQL, MySQL / MariaDB).
Index("ix_bgtaskex_tasks_unique_key", tasks.c.unique_key, unique=True)
# `stats` (counts per queue, type and status) and `list --queue` counts: covering. The
# pages of tasks of a queue (store/pages.py), newest first: one range per (queue, type,
# status), in id order (PostgreSQL orders equal keys by their place in the heap, not by
# id: hence id in the key; SQLite and InnoDB append the row id anyway).
Index(
    "ix_bgtaskex_tasks_queue_type_status_id",
    tasks.c.queue,
    tasks.c.type,
    tasks.c.status,
    tasks.c.id,
)
# The pages of tasks of some types or statuses, every queue: one range per (type, status).
Index("ix_bgtaskex_tasks_type_status_id", tasks.c.type, tasks.c.status, tasks.c.id)
# `list --since / --until` and their pages: the tasks created within a time range.
Index("ix_bgtaskex_tasks_created_at_id", tasks.c.created_at, tasks.c.id)
# `purge` and the expiry of ended tasks (keep_finished, keep_failed): terminal tasks of
# a status ended before a cutoff.
Index("ix_bgtaskex_tasks_status_ended_at", tasks.c.status, tasks.c.ended_at)

actions = Table(
    "bgtaskex_actions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("bgtaskex_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("ref", Str(255), nullable=False),
    Column("status", Str(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("params", Params, nullable=False),
    Column("initial_params", Params, nullable=False),  # as enqueued: `retry --from-start`
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("progress_done", Real, nullable=True),
    Column("progress_total", Real, nullable=True),
    Column("progress_message", Str(200), nullable=True),
    Column("elapsed", Real, nullable=False, default=0.0),  # seconds in execute, all runs
    # Why the last execute died: "crash", "overrun: ..." or "<ExceptionType>: <message>".
    Column("last_failure", Str(2000), nullable=True),
    UniqueConstraint("task_id", "rank"),
)
# `stats`: actions ended in the last hour / day.
Index("ix_bgtaskex_actions_status_ended_at", actions.c.status, actions.c.ended_at)
# `list` and the dashboard's pages (store/listed.py): a task's first failed, pending or
# active action, one seek each, whatever the length of its chain.
Index(
    "ix_bgtaskex_actions_task_id_status_rank",
    actions.c.task_id,
    actions.c.status,
    actions.c.rank,
)

events = Table(
    "bgtaskex_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("bgtaskex_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("run_id", Str(32), nullable=True),
    Column("rank", Integer, nullable=True),
    Column("old_status", Str(16), nullable=True),
    Column("new_status", Str(16), nullable=True),
    Column("message", LongStr(), nullable=False),
    Column("error", LongStr(), nullable=True),
)
Index("ix_bgtaskex_events_task_id_id", events.c.task_id, events.c.id)


@event.listens_for(metadata, "before_create")
def _partial_indexes_on_postgresql(_target: MetaData, connection: Any, **_kw: Any) -> None:
    """The partial indexes above are written for SQLite; PostgreSQL gets the same WHERE
    clauses when it creates the schema. Naming `postgresql_where` up front would make
    SQLAlchemy import its PostgreSQL dialect in every run, SQLite ones included (~40 ms);
    the Alembic migration states both. MySQL and MariaDB have no partial indexes: they
    get plain ones, where `run_order IS NOT NULL` is a range that skips the NULLs."""
    if connection.dialect.name != "postgresql":
        return
    for index in tasks.indexes:
        where = index.dialect_options["sqlite"]["where"]
        if where is not None:
            index.dialect_options["postgresql"]["where"] = where


# The record of every run (`bgtaskex runs`, `check`): one row per run that took its
# lock, written as it starts (outcome "running") and again as it ends. A run killed
# before its end leaves "running"; readers tell it from a live one by its holder.
runs = Table(
    "bgtaskex_runs",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("run_id", Str(32), nullable=False),  # 8 hex digits: not unique over years
    Column("process", Str(100), nullable=True),  # the scheduled process; NULL: run-once
    Column("holder", Str(100), nullable=False),  # owner.holder_name(): is it alive?
    Column("host", Str(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("lock", Str(16), nullable=False),
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("budget", Real, nullable=False),
    Column("outcome", Str(16), nullable=False),
    Column("finished", Integer, nullable=False, server_default="0"),
    Column("paused", Integer, nullable=False, server_default="0"),
    Column("failed", Integer, nullable=False, server_default="0"),
    Column("errors", Integer, nullable=False, server_default="0"),
    Column("cancelled", Integer, nullable=False, server_default="0"),
    Column("lost", Integer, nullable=False, server_default="0"),
    Column("actions", Integer, nullable=False, server_default="0"),
    Column("left_waiting", Integer, nullable=False, server_default="0"),
    Column("purged", Integer, nullable=False, server_default="0"),
    Column("max_overrun", Real, nullable=False, server_default="0"),
    Column("error", LongStr(), nullable=True),  # masked: what ended the run, if not its end
)
Index("ix_bgtaskex_runs_started_at", runs.c.started_at)
Index("ix_bgtaskex_runs_ended_at", runs.c.ended_at)
Index("ix_bgtaskex_runs_process_started_at", runs.c.process, runs.c.started_at)

# Queues an operator paused (`bgtaskex pause QUEUE`): no run takes a task of one.
queue_pauses = Table(
    "bgtaskex_queue_pauses",
    metadata,
    Column("queue", Str(100), primary_key=True),
    Column("paused_at", UTCDateTime, nullable=False),
    Column("reason", Str(500), nullable=True),
    Column("paused_by", Str(255), nullable=True),  # user@host that paused it
)
