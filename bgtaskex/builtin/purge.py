"""A retention rule resolved against its database: the reflected table, its key and the
statements that walk and delete it. The one place that builds SQL on an application's
database (bgtaskex's own tables are the store's business).

Values are always bound: the rule's `where` is an SQL text whose `:name` parameters come
from the rule's `params`, the cut-off date and the key range are bind parameters.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    Table,
    bindparam,
    delete,
    func,
    select,
    text,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.sql import Delete, Select
from sqlalchemy.sql.elements import BindParameter, ClauseElement, ColumnElement, Grouping

from ..exceptions import ConfigError, DatabaseUnavailable
from ..rules import RetentionRule, where_problem
from ..store.engine import first_line, make_engine
from ..urls import mask_secrets

log = logging.getLogger("bgtaskex.retention")

BUSY_TIMEOUT = 30.0


class RuleError(ConfigError):
    """A rule that its database cannot serve (no such table or column, no usable key)."""


@dataclass(frozen=True, slots=True)
class Preview:
    """What a rule would delete now."""

    rule: str
    table: str
    key: str
    count: int
    sample: tuple[int, ...]  # the lowest keys that would go
    low: int | None
    high: int | None
    #: The statements a walk runs, as (what, SQL), rendered from the very objects it
    #: executes (placeholders written :name), and the values bound by the rule itself.
    sql: tuple[tuple[str, str], ...] = ()
    values: tuple[tuple[str, Any], ...] = ()


def open_engine(rule: RetentionRule, own_url: str) -> Engine:
    """An engine on the rule's database (bgtaskex's own when the rule names none)."""
    return make_engine(rule.database or own_url, None, BUSY_TIMEOUT, own=False)


class Target:
    """A rule bound to its database: reflected once, then statements on demand.

    `cutoff` fixes "older than" to one moment, so a walk resumed next week deletes what
    the rule selected when the walk began, not more.
    """

    def __init__(self, rule: RetentionRule, engine: Engine, cutoff: datetime | None) -> None:
        self.rule = rule
        self.engine = engine
        self.where = f"retention rule {rule.name!r}"
        self._held: Connection | None = None
        self._metadata = MetaData()
        self._connect().close()
        with self._translated():
            self.table = self._reflect(rule.table)
            self.children = [
                (self._reflect(child.table), child.column) for child in rule.also_delete
            ]
        self.key = self._key_column()
        for child, column in self.children:
            if column not in child.c:
                raise RuleError(f"{self.where}: table {child.name!r} has no column {column!r}")
        self.date = self._date_column()
        self.cutoff = cutoff
        self.condition = self._condition()
        self._check_condition()

    @property
    def key_name(self) -> str:
        return self.key.name

    # -- reflection and checks -------------------------------------------------------

    @contextmanager
    def _translated(self) -> Iterator[None]:
        try:
            yield
        except sa_exc.NoSuchTableError as err:
            raise RuleError(f"{self.where}: table {str(err)!r} not found") from None
        except sa_exc.DBAPIError as err:
            # Reached once already: an error now is the rule's (a bad `where`), unless
            # the connection itself broke.
            if err.connection_invalidated:
                url = self.engine.url.render_as_string(hide_password=True)
                raise DatabaseUnavailable(f"{self.where}: {url}: {first_line(err)}") from err
            raise RuleError(f"{self.where}: {first_line(err)}") from err

    def _reflect(self, name: str) -> Table:
        schema, _, table = name.rpartition(".")
        return Table(
            table,
            self._metadata,
            schema=schema or None,
            autoload_with=self.engine,
            resolve_fks=False,  # what other tables refer to is none of the walk's business
        )

    def _key_column(self) -> Column[Any]:
        keys = list(self.table.primary_key.columns)
        if len(keys) != 1:
            what = "no primary key" if not keys else f"a {len(keys)}-column primary key"
            raise RuleError(
                f"{self.where}: table {self.rule.table!r} has {what}; "
                "rules need a single-column integer primary key"
            )
        key = keys[0]
        if not isinstance(key.type, Integer):
            raise RuleError(
                f"{self.where}: the primary key {key.name!r} of {self.rule.table!r} is "
                f"{key.type}, not an integer; rules need a single-column integer key"
            )
        return key

    def _date_column(self) -> Column[Any] | None:
        name = self.rule.date_column
        if name is None:
            return None
        if name not in self.table.c:
            raise RuleError(f"{self.where}: table {self.rule.table!r} has no column {name!r}")
        column = self.table.c[name]
        if not isinstance(column.type, Date | DateTime):
            raise RuleError(
                f"{self.where}: column {name!r} is {column.type}, not a date or timestamp"
            )
        return column

    def _condition(self) -> list[ColumnElement[bool]]:
        """The rule as terms ANDed to every statement: the age limit, then the `where`
        as ONE term in parentheses, so that its OR cannot reach past them."""
        found: list[ColumnElement[bool]] = []
        if self.date is not None:
            cutoff = self.cutoff or default_cutoff(self.rule)
            aware = getattr(self.date.type, "timezone", False)
            # Naive columns hold UTC (SQLAlchemy's habit); aware ones compare as instants.
            value = cutoff if aware else cutoff.replace(tzinfo=None)
            found.append(self.date < bindparam("bgtaskex_cutoff", value, type_=self.date.type))
        if self.rule.where is not None:
            problem = where_problem(self.rule.where)
            if problem is not None:  # parse_rules refuses it; a walk's saved definition too
                raise RuleError(f"{self.where}: 'where' must be one condition, {problem}")
            condition = text(self.rule.where)
            wanted = set(condition._bindparams)
            given = dict(self.rule.params)
            missing = sorted(wanted - set(given))
            if missing:
                raise RuleError(f"{self.where}: 'where' uses :{missing[0]}, not in 'params'")
            bound = condition.bindparams(**{k: given[k] for k in wanted})
            # text() groups itself only inside IN: without Grouping, "a OR b" would be
            # ANDed as "range AND age AND a OR b".
            found.append(Grouping(bound))
        return found

    def _check_condition(self) -> None:
        """Compile and run the condition on zero rows: an unknown column or a syntax
        error in `where` is refused now, not in the middle of a walk."""
        with self._translated(), self.reading() as conn:
            conn.execute(self.check_statement()).first()

    def check_statement(self) -> Select[Any]:
        """The condition on zero rows (not false(): SQLAlchemy would fold the whole clause
        away, unchecked)."""
        return select(self.key).where(*self.condition, text("1 = 0")).limit(1)

    @contextmanager
    def session(self, seconds: float) -> Iterator[None]:
        """Hold one connection while a run walks the rule (no checkout, ping or setup per
        chunk). A row lock held by the application is waited for at most about `seconds`
        (30 at most), so a blocked chunk fails and is halved instead of outliving the
        run; SQLite waits on its busy timeout."""
        conn = self._connect()
        try:
            wait = max(1, min(30, round(seconds)))
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"SET lock_timeout = '{wait}s'")
                conn.commit()
            elif conn.dialect.name in ("mysql", "mariadb"):
                conn.exec_driver_sql(f"SET SESSION innodb_lock_wait_timeout = {wait}")
                conn.commit()
            self._held = conn
            yield
        finally:
            self._held = None
            conn.invalidate()  # its session settings must not reach the pool
            conn.close()

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except sa_exc.DBAPIError as err:
            url = self.engine.url.render_as_string(hide_password=True)
            raise DatabaseUnavailable(f"{self.where}: {url}: {first_line(err)}") from err

    @contextmanager
    def _transaction(self, readonly: bool) -> Iterator[Connection]:
        held = self._held
        conn = held or self._connect()
        try:
            # On SQLite, a write transaction takes the write lock from its first read.
            conn.execution_options(bgtaskex_txn="read" if readonly else "write")
            with conn.begin():
                yield conn
        finally:
            if held is None:
                conn.close()

    def reading(self) -> AbstractContextManager[Connection]:
        """A read transaction (on SQLite, without the write lock)."""
        return self._transaction(readonly=True)

    def writing(self) -> AbstractContextManager[Connection]:
        """A write transaction."""
        return self._transaction(readonly=False)

    # -- the statements: built here only, run by the walk, rendered by the preview -----

    def _in_range(self) -> list[ColumnElement[bool]]:
        after: BindParameter[int] = bindparam("bgtaskex_after")
        high: BindParameter[int] = bindparam("bgtaskex_high")
        return [self.key > after, self.key <= high, *self.condition]

    def count_statement(self) -> Select[int, Any, Any]:
        """How many rows the rule selects, their lowest and highest key (what a walk
        fixes at its start)."""
        return select(func.count(), func.min(self.key), func.max(self.key)).where(*self.condition)

    def keys_statement(self, *, lock: bool, limit: bool) -> Select[Any]:
        """The keys in (:bgtaskex_after, :bgtaskex_high] that the rule selects, lowest
        first: the first :bgtaskex_limit of them with `limit`, row-locked on servers with
        `lock` (SQLite's write transaction locks the whole database)."""
        query = select(self.key).where(*self._in_range()).order_by(self.key)
        if limit:
            query = query.limit(bindparam("bgtaskex_limit"))
        if lock and self.engine.dialect.name != "sqlite":
            query = query.with_for_update()
        return query

    def range_count_statement(self) -> Select[int]:
        """How many rows in (:bgtaskex_after, :bgtaskex_high] the rule selects."""
        return select(func.count()).where(*self._in_range())

    def delete_statements(self) -> list[Delete]:
        """The child rows, then the rows, that the rule selects in (:bgtaskex_after,
        :bgtaskex_high]: by range and condition rather than by a list of keys, so the
        statements stay small whatever the chunk size."""
        selected = select(self.key).where(*self._in_range())
        children = [delete(child).where(child.c[col].in_(selected)) for child, col in self.children]
        return [*children, delete(self.table).where(*self._in_range())]

    def statements(self) -> list[tuple[str, ClauseElement]]:
        """Each statement of a walk that carries the rule's condition, in the order a
        walk runs them: (what, statement)."""
        return [
            ("check", self.check_statement()),
            ("count", self.count_statement()),
            ("keys", self.keys_statement(lock=False, limit=True)),
            ("lock", self.keys_statement(lock=True, limit=False)),
            *(("delete", statement) for statement in self.delete_statements()),
            ("recount", self.range_count_statement()),
        ]

    def render(self, statement: ClauseElement) -> str:
        """`statement` as this database's dialect compiles it for its driver, except that
        placeholders are written :name (for the reader; the values are bound alike)."""
        dialect = copy.copy(self.engine.dialect)
        dialect.paramstyle, dialect.positional = "named", False
        return str(statement.compile(dialect=dialect))

    def values(self) -> list[tuple[str, Any]]:
        """The values that the rule binds: the cut-off, then the `where`'s params."""
        return [(bind.key, bind.value) for term in self.condition for bind in _binds(term)]

    # -- the walk ----------------------------------------------------------------------

    def preview(self, sample: int = 10) -> Preview:
        """How many rows the rule selects now, the lowest `sample` keys and the key
        range (what `init_params` fixes), and the statements that a walk runs."""
        with self._translated(), self.reading() as conn:
            count, low, high = conn.execute(self.count_statement()).one()
            keys = (
                conn.scalars(
                    select(self.key).where(*self.condition).order_by(self.key).limit(sample)
                ).all()
                if sample > 0
                else []
            )
        return Preview(
            self.rule.name,
            self.rule.table,
            self.key.name,
            int(count),
            tuple(keys),
            low,
            high,
            tuple((what, self.render(statement)) for what, statement in self.statements()),
            tuple(self.values()),
        )

    def candidates(
        self, conn: Connection, after: int, high: int, size: int, *, lock: bool = True
    ) -> list[int]:
        """The next `size` keys past `after` that the rule selects (locked on servers)."""
        query = self.keys_statement(lock=lock, limit=True)
        return list(conn.scalars(query, {**_range(after, high), "bgtaskex_limit": size}))

    def count(self, conn: Connection, after: int, last: int) -> int:
        """How many rows in (after, last] the rule selects."""
        return int(conn.execute(self.range_count_statement(), _range(after, last)).scalar_one())

    def lock_range(self, conn: Connection, after: int, last: int) -> list[int]:
        """The keys in (after, last] that the rule selects, locked on servers."""
        query = self.keys_statement(lock=True, limit=False)
        return list(conn.scalars(query, _range(after, last)))

    def delete_range(self, conn: Connection, after: int, last: int) -> int:
        """Delete the rows the rule selects in (after, last], their child rows first (in
        the caller's transaction, which locked them); the number of rows deleted."""
        values = _range(after, last)
        *children, rows = self.delete_statements()
        for statement in children:
            conn.execute(statement, values)
        return conn.execute(rows, values).rowcount

    def delete(self, conn: Connection, keys: Sequence[int]) -> None:
        """Delete the child rows, then the rows, of `keys` (in the caller's transaction):
        keys that `lock_range` read with the rule's condition, under lock."""
        if not keys:
            return
        values = {"bgtaskex_keys": list(keys)}
        for child, column in self.children:
            conn.execute(
                delete(child).where(child.c[column].in_(_keys())),
                values,
            )
        conn.execute(delete(self.table).where(self.key.in_(_keys())), values)

    def existing(self, keys: Sequence[int]) -> set[int]:
        """Which of `keys` are still in the table."""
        if not keys:
            return set()
        with self.reading() as conn:
            query = select(self.key).where(self.key.in_(_keys()))
            return set(conn.scalars(query, {"bgtaskex_keys": list(keys)}))


def _binds(term: ColumnElement[bool]) -> list[BindParameter[Any]]:
    from sqlalchemy.sql.visitors import iterate

    return [element for element in iterate(term) if isinstance(element, BindParameter)]


def _range(after: int, last: int) -> dict[str, int]:
    # Named so that no parameter of a rule's `where` can take their place.
    return {"bgtaskex_after": after, "bgtaskex_high": last}


def _keys() -> BindParameter[Any]:
    return bindparam("bgtaskex_keys", expanding=True)


def default_cutoff(rule: RetentionRule, now: datetime | None = None) -> datetime:
    """The moment before which rows are old, for a rule with `older_than`."""
    now = now or datetime.now(UTC)
    return now - timedelta(seconds=rule.older_than or 0)


def bind(rule: RetentionRule, own_url: str, cutoff: datetime | None = None) -> Target:
    """Reflect the rule's database and check the rule against it (RuleError says what is
    wrong, DatabaseUnavailable when it cannot be reached)."""
    engine = open_engine(rule, own_url)
    try:
        return Target(rule, engine, cutoff)
    except BaseException:
        engine.dispose()
        raise


def describe_url(rule: RetentionRule, own_url: str) -> str:
    return mask_secrets(rule.database or own_url)
