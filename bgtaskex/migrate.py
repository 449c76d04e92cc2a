"""Schema migrations through Alembic, run on a connection that bgtaskex opened.

Imported only when the schema is not current, so a normal run never pays for Alembic.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Engine


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "bgtaskex:migrations")
    return config


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the schema; concurrent callers serialise (BEGIN IMMEDIATE on SQLite, an
    advisory lock on PostgreSQL, a user lock on MySQL / MariaDB, whose DDL is not
    transactional: see migrations/env.py), so the second one finds the work done."""
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
