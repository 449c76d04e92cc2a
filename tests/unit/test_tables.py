"""The SQL types of the schema on each backend.

SQLite and PostgreSQL keep the types their databases were created with; MySQL and
MariaDB get what keeps values as the others do: microseconds, double precision, UTF-8
text compared byte for byte, error text longer than 64 KiB.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.dialects.mysql.mariadb import MariaDBDialect

from bgtaskex import tables

COLUMNS = (
    "bgtaskex_tasks.queue",
    "bgtaskex_tasks.created_at",
    "bgtaskex_actions.params",
    "bgtaskex_actions.elapsed",
    "bgtaskex_events.message",
)
EXPECTED = {
    "sqlite": ("VARCHAR(100)", "DATETIME", "JSON", "FLOAT", "TEXT"),
    "postgresql": ("VARCHAR(100)", "TIMESTAMP WITH TIME ZONE", "JSONB", "FLOAT", "TEXT"),
    "mysql": (
        "VARCHAR(100) COLLATE utf8mb4_bin",
        "DATETIME(6)",
        "JSON",
        "DOUBLE",
        "MEDIUMTEXT COLLATE utf8mb4_bin",
    ),
}
DIALECTS: dict[str, Any] = {
    "sqlite": sqlite.dialect(),
    "postgresql": postgresql.dialect(),
    "mysql": mysql.dialect(),
    "mariadb": MariaDBDialect(),  # mariadb+pymysql:// URLs
}


@pytest.mark.parametrize("name", sorted(DIALECTS))
def test_column_types(name: str) -> None:
    dialect = DIALECTS[name]
    found = []
    for qualified in COLUMNS:
        table, column = qualified.split(".")
        found.append(tables.metadata.tables[table].c[column].type.compile(dialect=dialect))
    assert tuple(found) == EXPECTED["mysql" if name == "mariadb" else name]
