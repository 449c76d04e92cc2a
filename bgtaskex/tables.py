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

# SQLite only autoincrements an INTEGER PRIMARY KEY (the rowid); elsewhere ids are 64-bit.
Id = BigInteger().with_variant(Integer(), "sqlite")


class Params(TypeDecorator[Any]):
    """A JSON object: JSONB on PostgreSQL, JSON (text) elsewhere.

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
    """Timestamps are stored in UTC and always come back timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

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
    Column("name", String(200), nullable=False),
    Column("type", String(16), nullable=False),
    Column("queue", String(100), nullable=False),
    Column("status", String(16), nullable=False),
    # models.run_order(type, status): NULL once the task has ended, so the run's
    # "next task" query is a range scan of a small partial index.
    Column("run_order", SmallInteger, nullable=True),
    Column("current_rank", Integer, nullable=True),
    # The run that last wrote the task: a run does not take a task twice.
    Column("last_run_id", String(32), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
    # Set by `bgtaskex cancel` while a run may be executing the task: the run ends it
    # as cancelled at its next write (checkpoint or hook return).
    Column("cancel_requested_at", UTCDateTime, nullable=True),
    # Claims (concurrency lock = "none"): the worker holding the task, a fencing token
    # that grows with every claim (a write carrying an older one is refused), and the
    # end of the lease, after which another worker may take the task over.
    Column("claimed_by", String(100), nullable=True),
    Column("claim_token", BigInteger, nullable=False, server_default="0"),
    Column("lease_until", UTCDateTime, nullable=True),
)
Index(
    "ix_bgtaskex_tasks_due",
    tasks.c.run_order,
    tasks.c.id,
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
    sqlite_where=tasks.c.run_order.isnot(None),
)
# `stats` (counts per queue, type and status) and `list --queue` counts: covering.
Index("ix_bgtaskex_tasks_queue_type_status", tasks.c.queue, tasks.c.type, tasks.c.status)
# `purge` and retention: terminal tasks of a status ended before a cutoff.
Index("ix_bgtaskex_tasks_status_ended_at", tasks.c.status, tasks.c.ended_at)

actions = Table(
    "bgtaskex_actions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("bgtaskex_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("rank", Integer, nullable=False),
    Column("ref", String(255), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("params", Params, nullable=False),
    Column("initial_params", Params, nullable=False),  # as enqueued: `retry --from-start`
    Column("started_at", UTCDateTime, nullable=True),
    Column("ended_at", UTCDateTime, nullable=True),
    Column("progress_done", Float, nullable=True),
    Column("progress_total", Float, nullable=True),
    Column("progress_message", String(200), nullable=True),
    Column("elapsed", Float, nullable=False, default=0.0),  # seconds in execute, all runs
    UniqueConstraint("task_id", "rank"),
)
# `stats`: actions ended in the last hour / day.
Index("ix_bgtaskex_actions_status_ended_at", actions.c.status, actions.c.ended_at)

events = Table(
    "bgtaskex_events",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("task_id", Id, ForeignKey("bgtaskex_tasks.id", ondelete="CASCADE"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("run_id", String(32), nullable=True),
    Column("rank", Integer, nullable=True),
    Column("old_status", String(16), nullable=True),
    Column("new_status", String(16), nullable=True),
    Column("message", Text, nullable=False),
    Column("error", Text, nullable=True),
)
Index("ix_bgtaskex_events_task_id_id", events.c.task_id, events.c.id)


@event.listens_for(metadata, "before_create")
def _partial_indexes_on_postgresql(_target: MetaData, connection: Any, **_kw: Any) -> None:
    """The partial indexes above are written for SQLite; PostgreSQL gets the same WHERE
    clauses when it creates the schema. Naming `postgresql_where` up front would make
    SQLAlchemy import its PostgreSQL dialect in every run, SQLite ones included (~40 ms);
    the Alembic migration states both."""
    if connection.dialect.name != "postgresql":
        return
    for index in tasks.indexes:
        where = index.dialect_options["sqlite"]["where"]
        if where is not None:
            index.dialect_options["postgresql"]["where"] = where
