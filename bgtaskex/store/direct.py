"""The run's hot statements, compiled once and sent on the driver's cursor.

A run sends a few statements per task. Around each, `Connection.execute` spends about
25 µs of Python (cache key, execution context, parameter processing, result set-up),
several times what SQLite takes to run it. Here a cached statement of `statements` is
compiled once per dialect into its SQL text, the order of its parameters and their type
processors (`Prepared`), and each execution only fills the parameters in and hands them
to `Connection._cursor_execute`: SQLAlchemy's own path for SQL it does not compile itself
(sequences, defaults). That path keeps what matters of SQLAlchemy's: the cursor events
(tracing, the commit counters of the tests and the bench), the echo log, and driver
errors wrapped as `DBAPIError`, a lost session invalidating the connection, so that
`engine.translated` reads them as any other. The transaction stays the connection's.

No psycopg pipeline: between its statements and its sync, a PostgreSQL session holding
the task's row locks is "active", not "idle in transaction", so a worker frozen there
(SIGSTOP, a paused VM) would keep them past `idle_in_transaction_session_timeout`,
and no other worker could take its task over (tests/acceptance/test_scaleout.py).
A flush goes in one round trip another way (`Direct.rowcounts`): its statements as one
script of literals, which the server runs through before it answers.

Statements with expanding (IN) or post-compile parameters are not prepared
(`preparable`): they go through `Connection.execute`.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, DateTime
from sqlalchemy.engine import Dialect

from ..exceptions import StorageError

Processor = Callable[[Any], Any] | None

#: The most statements a `Direct` keeps: the run's few shapes, with room to spare.
MAX_PREPARED = 512


@dataclass(slots=True)
class Prepared:
    """One statement compiled for one dialect (its result processors are found at its
    first execution: some depend on the type the driver reports)."""

    sql: str
    names: tuple[str, ...]  # the parameters, in the driver's order (positional styles)
    keys: tuple[str, ...] | None  # their keys in the driver's dict (named styles)
    processors: tuple[tuple[int, Callable[[Any], Any]], ...]  # (place, processor)
    defaults: Mapping[str, Any]  # values the statement binds itself (literals)
    row: Any  # a namedtuple class of the result's columns (None: no result)
    types: tuple[Any, ...]  # the result columns' types
    results: tuple[Processor, ...] | None = None

    def parameters(self, values: Mapping[str, Any]) -> Any:
        """The driver's parameters for `values` (by bind name), processed by type."""
        defaults = self.defaults
        out = [values[name] if name in values else defaults[name] for name in self.names]
        for place, process in self.processors:
            if out[place] is not None:
                out[place] = process(out[place])
        return tuple(out) if self.keys is None else dict(zip(self.keys, out, strict=True))

    def rows(self, dialect: Dialect, cursor: Any) -> list[Any]:
        """The result rows as named tuples, their values processed by type."""
        raw = cursor.fetchall()
        results = self.results
        if results is None:
            reported = [column[1] for column in cursor.description]
            results = self.results = tuple(
                t.dialect_impl(dialect).result_processor(dialect, r)
                for t, r in zip(self.types, reported, strict=True)
            )
        make = self.row._make
        return [
            make(v if p is None or v is None else p(v) for p, v in zip(results, r, strict=True))
            for r in raw
        ]


def preparable(
    statement: Any, dialect: Dialect, memos: dict[Any, list[Any]] | None = None
) -> Prepared | None:
    """`statement` compiled for `dialect`; None when it cannot be prepared once for all
    executions (expanding or post-compile parameters). `memos`: see `_bind_processor`."""
    compiled: Any = statement.compile(dialect=dialect)
    binds = compiled.binds
    if "POSTCOMPILE" in compiled.string or any(b.expanding for b in binds.values()):
        return None
    if compiled.positiontup is not None:
        names, keys = tuple(compiled.positiontup), None
    else:
        names = tuple(binds)
        escaped = compiled.escaped_bind_names or {}
        keys = tuple(escaped.get(name, name) for name in names)
    memos = {} if memos is None else memos
    found = [_bind_processor(binds[name].type, dialect, memos) for name in names]
    processors = tuple((place, p) for place, p in enumerate(found) if p is not None)
    defaults = {n: b.effective_value for n, b in binds.items() if not b.required}
    row: Any = None
    types: tuple[Any, ...] = ()
    selected = getattr(statement, "selected_columns", None)
    if selected is not None and statement.is_select:
        row = collections.namedtuple("Row", list(selected.keys()), rename=True)  # type: ignore[misc,no-redef]
        types = tuple(c.type for c in selected)
    return Prepared(compiled.string, names, keys, processors, defaults, row, types)


def _bind_processor(type_: Any, dialect: Dialect, memos: dict[Any, list[Any]]) -> Processor:
    process: Processor = type_.dialect_impl(dialect).bind_processor(dialect)
    if process is None or not isinstance(getattr(type_, "impl_instance", type_), DateTime):
        return process
    # A flush binds the same instant in all its statements: converted once, shared by
    # the statements of a type (`memos`). The (value, converted) pair is replaced whole,
    # so that workers in threads never read one's value with another's conversion.
    last = memos.setdefault(type(type_), [(None, None)])

    def remembered(value: Any) -> Any:
        seen, converted = last[0]
        if value is not seen:
            converted = process(value)
            last[0] = (value, converted)
        return converted

    return remembered


def open_cursor(conn: Connection) -> Any:
    """A cursor of `conn`'s DBAPI connection; a driver error (a connection closed under
    it) raised as SQLAlchemy raises it, as inside `Connection._cursor_execute`."""
    try:
        return conn.connection.cursor()
    except conn.dialect.loaded_dbapi.Error as err:
        conn._handle_dbapi_exception(err, None, None, None, None)


def send(conn: Connection, sql: str, parameters: Any = ()) -> None:
    """Run `sql` on a cursor of its own (no result)."""
    cursor = open_cursor(conn)
    try:
        conn._cursor_execute(cursor, sql, parameters)
    finally:
        cursor.close()


class Direct:
    """The statements of one engine's dialect, each prepared on first use."""

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._prepared: dict[int, tuple[Any, Prepared | None]] = {}
        self._memos: dict[Any, list[Any]] = {}
        #: A flush goes as one script of literals (`rowcounts`): PostgreSQL with psycopg 3.
        self.scripts = dialect.name == "postgresql" and dialect.driver == "psycopg"

    def prepared(self, statement: Any) -> Prepared | None:
        """`statement` prepared (cached by identity: pass the cached statements of
        `statements`, not one built per call: those go through `Connection.execute`)."""
        found = self._prepared.get(id(statement))
        if found is None or found[0] is not statement:
            if len(self._prepared) >= MAX_PREPARED:  # statements built per call: a bug
                self._prepared.clear()
            found = (statement, preparable(statement, self.dialect, self._memos))
            self._prepared[id(statement)] = found
        return found[1]

    def execute(self, conn: Connection, statement: Any, values: Mapping[str, Any]) -> Any:
        """Run `statement` with `values` in `conn`'s transaction; the rows of a SELECT
        (named tuples), else the number of rows it changed."""
        prepared = self.prepared(statement)
        if prepared is None:
            result = conn.execute(statement, dict(values))
            return result.all() if result.returns_rows else result.rowcount
        cursor = open_cursor(conn)
        try:
            conn._cursor_execute(cursor, prepared.sql, prepared.parameters(values))
            if prepared.row is not None:
                return prepared.rows(self.dialect, cursor)
            return cursor.rowcount
        finally:
            cursor.close()

    def rowcount(self, conn: Connection, statement: Any, values: Mapping[str, Any]) -> int:
        """Run a write; the number of rows it changed."""
        return int(self.execute(conn, statement, values))

    def rowcounts(
        self,
        conn: Connection,
        writes: Sequence[tuple[Any, Mapping[str, Any]]],
        checked: Collection[int] = (),
        *,
        one_by_one: bool = False,
    ) -> list[int]:
        """Run `writes` (statement, values) in order in `conn`'s transaction; the number of
        rows each changed. One by one, they stop after a write whose place is in
        `checked` changed no row (the caller refuses and rolls back). On PostgreSQL
        with psycopg 3, all in one round trip (`literal_script`): all run, and the caller
        checks after; `one_by_one`: not in one script, whatever the driver."""
        prepared = [self.prepared(statement) for statement, _ in writes]
        if one_by_one or not self.scripts or len(writes) < 2 or None in prepared:
            counts = []
            for place, (statement, values) in enumerate(writes):
                counts.append(self.rowcount(conn, statement, values))
                if counts[-1] == 0 and place in checked:
                    break
            return counts
        cursor = open_cursor(conn)
        try:
            try:
                script = literal_script(conn, prepared, [values for _, values in writes])
            except Exception as err:  # a value the driver cannot bind (a NUL, a lone
                # surrogate): raised as SQLAlchemy raises it from an execute (StatementError
                # or DBAPIError), as the statements sent one by one would raise it
                sent = ";\n".join(p.sql for p in prepared if p)
                conn._handle_dbapi_exception(err, sent, None, cursor, None)
            # No parameters (None, not ()): psycopg sends the script with the simple protocol.
            conn._cursor_execute(cursor, script, None)  # type: ignore[arg-type]
            counts = [cursor.rowcount]
            while cursor.nextset():
                counts.append(cursor.rowcount)
        finally:
            cursor.close()
        if len(counts) != len(writes):  # a statement split in two would shift the counts
            raise StorageError(f"a flush of {len(writes)} statements gave {len(counts)} results")
        return counts


def literal_script(
    conn: Connection, prepared: Sequence[Prepared | None], values: Sequence[Mapping[str, Any]]
) -> str:
    """The statements with their values bound as literals by psycopg's own client-side
    binding (`ClientCursor.mogrify`: the driver's adapters and quoting), separated by `;`:
    PostgreSQL's simple query protocol runs them in one round trip. The session holding
    the rows' locks is then "idle in transaction" while the client checks the counts, so
    `idle_in_transaction_session_timeout` still ends a frozen worker's session."""
    import psycopg

    driver: Any = conn.connection.driver_connection
    binder = psycopg.ClientCursor(driver)
    try:
        return ";\n".join(
            binder.mogrify(p.sql, p.parameters(v))
            for p, v in zip(prepared, values, strict=True)
            if p
        )
    finally:
        binder.close()
