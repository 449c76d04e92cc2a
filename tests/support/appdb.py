"""An *application database* for tests of work that purges old rows: SQLite, PostgreSQL, MariaDB.

Three tables, with real foreign keys from the two child tables to `tickets`::

    tickets          (id, created_at NOT NULL, status NOT NULL, title)   index on created_at
    ticket_comments  (id, ticket_id NOT NULL -> tickets.id, body)        index on ticket_id
    ticket_links     (id, ticket_id NOT NULL -> tickets.id, url)         index on ticket_id

Every helper takes a SQLAlchemy URL (the `app_url` fixture gives a fresh, empty database per
test) and opens and disposes of its own engine. On SQLite, foreign keys are only enforced on a
connection that ran `PRAGMA foreign_keys=ON`: `app_engine` does that on every connection it
opens; code under test that builds its own engine must do the same, or it will delete parents
without complaint. On MariaDB the tables are InnoDB (the only engine there with foreign keys).

Times are naive UTC datetimes in whole seconds (MariaDB's plain DATETIME keeps no fractions;
whole seconds keep the three backends' data identical). SQLite stores them as text in
SQLAlchemy's format `YYYY-MM-DD HH:MM:SS.ffffff`, so raw SQL there must compare them with
values in the same format: `ids_where` binds datetime parameters through SQLAlchemy's DateTime
type for that reason.

`fill` is deterministic for a given seed, on every backend.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)

#: The fixed reference moment (naive UTC) that `fill` spreads `created_at` before, by default.
REFERENCE = datetime(2025, 1, 1, 0, 0, 0)

#: The values `fill` draws `tickets.status` from, uniformly.
STATUSES: tuple[str, ...] = ("open", "pending", "closed", "archived")

#: Share of tickets that `fill` (with children=True) gives 0-3 comments and 0-2 links.
CHILD_SHARE = 0.5

#: Rows per executemany call in `fill`.
BATCH = 5_000

#: Name of the trigger (and, on PostgreSQL, of its function) made by `add_refusing_trigger`.
TRIGGER = "tickets_refuse_delete"

#: Names of the child tables, each with a `ticket_id` referencing `tickets.id`.
CHILD_TABLES: tuple[str, ...] = ("ticket_comments", "ticket_links")

metadata = MetaData()

tickets = Table(
    "tickets",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("created_at", DateTime(), nullable=False),
    Column("status", String(20), nullable=False),
    Column("title", String(100)),
    Index("ix_tickets_created_at", "created_at"),
    sqlite_autoincrement=True,
    mysql_engine="InnoDB",
)

ticket_comments = Table(
    "ticket_comments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=False),
    Column("body", Text),
    Index("ix_ticket_comments_ticket_id", "ticket_id"),
    mysql_engine="InnoDB",
)

ticket_links = Table(
    "ticket_links",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("ticket_id", Integer, ForeignKey("tickets.id"), nullable=False),
    Column("url", String(200)),
    Index("ix_ticket_links_ticket_id", "ticket_id"),
    mysql_engine="InnoDB",
)

TABLES: tuple[Table, ...] = (tickets, ticket_comments, ticket_links)


def _sqlite_foreign_keys_on(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def app_engine(url: str) -> Engine:
    """An engine on the application database; on SQLite, every connection it opens has
    foreign keys enforced (`PRAGMA foreign_keys=ON`). The caller disposes of it."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_foreign_keys_on)
    return engine


@contextmanager
def opened_engine(url: str) -> Iterator[Engine]:
    """`app_engine(url)`, disposed of when the block ends."""
    engine = app_engine(url)
    try:
        yield engine
    finally:
        engine.dispose()


def create_app_schema(url: str) -> None:
    """Create the three tables and their indexes in the (empty) database at `url`."""
    with opened_engine(url) as engine:
        metadata.create_all(engine)


def _next_id(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one()) + 1


def _mysql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, datetime):
        return f"'{value:%Y-%m-%d %H:%M:%S}'"
    if isinstance(value, str) and not ("'" in value or "\\" in value):
        return f"'{value}'"
    raise TypeError(f"no literal for {value!r}")


def _insert(conn: Connection, table: Table, rows: list[tuple[Any, ...]]) -> None:
    """Insert `rows` (tuples in the table's column order) in batches of BATCH.

    PostgreSQL with psycopg: COPY (about 4x faster than psycopg's executemany). MariaDB:
    multi-row INSERTs built here from `fill`'s own values (ints, datetimes and quote-free
    strings) - what PyMySQL's executemany sends too, without its per-value escaping, which
    cost more than the server's work. Elsewhere (SQLite): SQLAlchemy Core's executemany.
    """
    if not rows:
        return
    names = [c.name for c in table.columns]
    dialect = conn.dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY {table.name} ({', '.join(names)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    for at in range(0, len(rows), BATCH):
        batch = rows[at : at + BATCH]
        if dialect.name in ("mysql", "mariadb"):
            values = ",".join("(" + ",".join(map(_mysql_literal, row)) + ")" for row in batch)
            conn.exec_driver_sql(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES {values}")
        else:
            conn.execute(insert(table), [dict(zip(names, row, strict=True)) for row in batch])


def fill(
    url: str,
    n: int = 100_000,
    *,
    seed: int = 0,
    children: bool = True,
    start: datetime = REFERENCE,
    days: int = 365,
    ordered: bool = False,
) -> None:
    """Insert `n` tickets (and, with `children`, their comments and links) in one transaction.

    `created_at` lies in [start - days, start), whole seconds: uniformly at random, or with
    `ordered` rising with the id (as an application's own inserts would). `status` is drawn
    from STATUSES; a random CHILD_SHARE of the tickets get 0-3 comments and 0-2 links each.
    Ids are explicit and continue after the largest one present, so `fill` may be called
    again on a filled database; on PostgreSQL the id sequences are moved past them.
    The same seed gives the same rows on every backend.
    """
    if n < 0 or days <= 0:
        raise ValueError("need n >= 0 and days > 0")
    rng = random.Random(seed)
    span = days * 86_400
    base = start.replace(microsecond=0) - timedelta(seconds=span)
    with opened_engine(url) as engine, engine.begin() as conn:
        ticket_id = _next_id(conn, tickets)
        comment_id = _next_id(conn, ticket_comments)
        link_id = _next_id(conn, ticket_links)
        for first in range(0, n, BATCH):
            ticket_rows: list[tuple[Any, ...]] = []
            comment_rows: list[tuple[Any, ...]] = []
            link_rows: list[tuple[Any, ...]] = []
            for i in range(first, min(first + BATCH, n)):
                offset = int((i + rng.random()) * span / n) if ordered else rng.randrange(span)
                created_at = base + timedelta(seconds=offset)
                ticket_rows.append(
                    (ticket_id, created_at, rng.choice(STATUSES), f"ticket {ticket_id}")
                )
                if children and rng.random() < CHILD_SHARE:
                    for k in range(rng.randint(0, 3)):
                        comment_rows.append((comment_id, ticket_id, f"comment {k} on {ticket_id}"))
                        comment_id += 1
                    for k in range(rng.randint(0, 2)):
                        link_rows.append(
                            (link_id, ticket_id, f"https://example.test/t/{ticket_id}/{k}")
                        )
                        link_id += 1
                ticket_id += 1
            _insert(conn, tickets, ticket_rows)
            _insert(conn, ticket_comments, comment_rows)
            _insert(conn, ticket_links, link_rows)
        if conn.dialect.name == "postgresql":
            for table in TABLES:
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM {table.name}))"
                    )
                )


def add_refusing_trigger(url: str, ids: Sequence[int]) -> None:
    """Make deleting any of the tickets `ids` fail: a BEFORE DELETE trigger on `tickets`
    that raises an error for exactly those ids, so the whole DELETE statement fails (and,
    like any failed statement, changes nothing). Deleting other tickets is unaffected.
    A second call replaces the first one's trigger."""
    if not ids:
        raise ValueError("add_refusing_trigger needs at least one id")
    id_list = ", ".join(str(int(i)) for i in ids)
    message = "ticket is protected: refusing to delete it"
    with opened_engine(url) as engine, engine.begin() as conn:
        dialect = conn.dialect.name
        if dialect == "sqlite":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER}")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {TRIGGER} BEFORE DELETE ON tickets "
                f"FOR EACH ROW WHEN OLD.id IN ({id_list}) "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            )
        elif dialect == "postgresql":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER} ON tickets")
            conn.exec_driver_sql(
                f"CREATE OR REPLACE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS "
                f"$fn$ BEGIN RAISE EXCEPTION USING MESSAGE = '{message} (id ' || OLD.id || ')', "
                f"ERRCODE = 'P0001'; END $fn$"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {TRIGGER} BEFORE DELETE ON tickets "
                f"FOR EACH ROW WHEN (OLD.id IN ({id_list})) EXECUTE FUNCTION {TRIGGER}()"
            )
        elif dialect in ("mysql", "mariadb"):
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {TRIGGER}")
            conn.exec_driver_sql(
                f"CREATE TRIGGER {TRIGGER} BEFORE DELETE ON tickets FOR EACH ROW "
                f"BEGIN IF OLD.id IN ({id_list}) THEN "
                f"SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = '{message}'; END IF; END"
            )
        else:
            raise NotImplementedError(f"no refusing trigger for {dialect}")


@dataclass(frozen=True)
class Rows:
    """The rows of the application database: ticket ids, and each child row's ticket."""

    tickets: set[int]
    children: dict[str, dict[int, int]]  # {child table: {row id: ticket_id}}


def rows(url: str) -> Rows:
    """The tickets and child rows of the database at `url` now."""
    with opened_engine(url) as engine, engine.connect() as conn:
        return Rows(
            set(conn.scalars(select(tickets.c.id))),
            {
                table.name: {row.id: row.ticket_id for row in conn.execute(select(table))}
                for table in (ticket_comments, ticket_links)
            },
        )


def snapshot(url: str) -> dict[str, set[int]]:
    """The ids present in each of the three tables, by table name."""
    with opened_engine(url) as engine, engine.connect() as conn:
        return {t.name: set(conn.execute(select(t.c.id)).scalars()) for t in TABLES}


def orphans(url: str) -> int:
    """How many child rows (comments and links) name a ticket that does not exist."""
    total = 0
    with opened_engine(url) as engine, engine.connect() as conn:
        for child in (ticket_comments, ticket_links):
            missing = ~select(tickets.c.id).where(tickets.c.id == child.c.ticket_id).exists()
            total += int(
                conn.execute(select(func.count()).select_from(child).where(missing)).scalar_one()
            )
    return total


def ids_where(url: str, sql_condition: str, params: Mapping[str, Any] | None = None) -> set[int]:
    """Ids of the tickets matching `sql_condition`, a SQL boolean expression over the columns
    of `tickets` with `:name` placeholders for `params`, e.g.
    ``ids_where(url, "created_at < :cutoff AND status = :s", {"cutoff": dt, "s": "closed"})``.
    Datetime parameters are bound as SQLAlchemy DateTime values (see the module's note on
    SQLite)."""
    params = dict(params or {})
    stmt = text(f"SELECT id FROM tickets WHERE {sql_condition}")
    typed = [
        bindparam(name, type_=DateTime()) for name, v in params.items() if isinstance(v, datetime)
    ]
    if typed:
        stmt = stmt.bindparams(*typed)
    with opened_engine(url) as engine, engine.connect() as conn:
        return set(conn.execute(stmt, params).scalars())
