"""The database of the settings: its store opened (the schema created or upgraded on
first use, or only looked at), or its schema upgraded on request (`bgtaskex db upgrade`).
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Settings
from .store.core import Store
from .store.probe import VERSION_TABLE, sqlite_may_hold_schema


@dataclass(frozen=True, slots=True)
class SchemaUpgrade:
    """What `upgrade_schema` did: the revision `before` (None: an empty database) and
    `after`; `moved_to` names bgtaskex's own version table when the revision of an
    earlier release's install was moved there from Alembic's `alembic_version`."""

    database: str  # the URL, password masked
    before: str | None
    after: str | None
    moved_to: str | None = None


def upgrade_schema(settings: Settings) -> SchemaUpgrade:
    """Create or upgrade the schema of the settings' database to this release."""
    store = Store(settings.url, create_dirs=settings.uses_default_url)
    try:
        before, legacy = store.schema_state()
        store.upgrade()
        after = store.schema_revision()
        return SchemaUpgrade(store.display_url, before, after, VERSION_TABLE if legacy else None)
    finally:
        store.close()


def open_store(settings: Settings, *, readonly: bool = False, create: bool = True) -> Store:
    """The store of `settings`, its schema created or upgraded on first use.

    `readonly` (the commands that only read): nothing is created or migrated, not even
    the SQLite file or its directory. A database without bgtaskex's schema reads as an
    empty queue (`Store.empty`, `Store.no_schema`); a schema of another release raises
    SchemaOutdated. `create=False` (a write that has nothing to do on a fresh database,
    `resume`): a database without the schema is such an empty queue too, and nothing is
    created; an existing schema is upgraded as usual."""
    fresh = create and not readonly  # may this create the database or its schema?
    if not fresh and not sqlite_may_hold_schema(settings.url):
        return Store.empty()
    store = Store(
        settings.url,
        sqlite_synchronous=settings.sqlite_synchronous,
        history=settings.history,
        create_dirs=settings.uses_default_url and fresh,
        # workers claiming tasks: a session frozen in a transaction must not keep its
        # task's row locked past the lease (see engine._idle_in_transaction)
        idle_in_transaction=settings.concurrency.lease if settings.concurrency.claims else None,
    )
    try:
        if not fresh and store.schema_revision() is None:
            store.close()
            return Store.empty()
        store.ensure_schema(upgrade=not readonly)
    except BaseException:
        store.close()
        raise
    return store
