"""`bgtaskex db`: the database schema."""

from __future__ import annotations

import click

from .common import State, pass_state


@click.group()
def db() -> None:
    """The database schema."""


@db.command(
    "upgrade",
    epilog="""\b
Examples:
  bgtaskex db upgrade
  bgtaskex --database-url postgresql+psycopg://bgtaskex@db/bgtaskex db upgrade""",
)
@pass_state
def db_upgrade(state: State) -> None:
    """Create or upgrade the schema to this release (also done on first use)."""
    from ..client import upgrade_schema

    done = upgrade_schema(state.settings())
    moved = f"; its revision moved from alembic_version to {done.moved_to}" if done.moved_to else ""
    click.echo(
        f"{done.database}: schema at {done.after}"
        + (" (already current" if done.before == done.after else f" (was {done.before or 'empty'}")
        + f"{moved})"
    )
