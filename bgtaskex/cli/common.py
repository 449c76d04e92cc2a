"""What the command modules share: the `State` of the global options (cli/state.py), the
options every command (or every task filter) takes, and the output helpers.

The group (cli/main.py) and each command module import this module; none imports the
group. Heavy modules (SQLAlchemy, rich, the models) are imported inside the functions.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..config import parse_duration, parse_when
from .state import State as State  # re-exported: the command modules take it from here

if TYPE_CHECKING:
    from ..models import TaskFilter

F = TypeVar("F", bound=Callable[..., Any])


pass_state = click.make_pass_decorator(State, ensure=True)


def remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """Record an option's value, and whether it came from the command line or the
    environment, for the settings and their error messages."""
    state = ctx.ensure_object(State)
    if value is None or value == ():
        return value
    assert param.name is not None
    source = ctx.get_parameter_source(param.name)
    if param.name == "config":
        state.config_file = value
        return value
    key = "imports" if param.name == "import_" else param.name
    state.overrides[key] = list(value) if isinstance(value, tuple) else value
    if source is click.core.ParameterSource.ENVIRONMENT and param.envvar:
        state.sources[key] = str(param.envvar)
    return value


def _decorated(func: F, options: list[Callable[[F], F]]) -> F:
    for option in reversed(options):
        func = option(func)
    return func


def global_options(func: F) -> F:
    """The options every command shares, each with its environment variable."""
    return _decorated(
        func,
        [
            click.option(
                "--config",
                metavar="FILE",
                envvar="BGTASKEX_CONFIG",
                callback=remember,
                expose_value=False,
                help="TOML config file (default: ~/.config/bgtaskex/bgtaskex.toml if present).",
            ),
            click.option(
                "--database-url",
                metavar="URL",
                envvar="BGTASKEX_DATABASE_URL",
                callback=remember,
                expose_value=False,
                help="SQLAlchemy URL (default: SQLite file in ~/.local/share/bgtaskex).",
            ),
            click.option(
                "--import",
                "import_",
                metavar="MODULE",
                multiple=True,
                callback=remember,
                expose_value=False,
                help="Module whose Action classes may be run (repeatable; adds to config/env).",
            ),
            click.option(
                "--pythonpath",
                metavar="DIR",
                multiple=True,
                callback=remember,
                expose_value=False,
                help="Directory put first on the Python path, for --import (repeatable; "
                "adds to config/env).",
            ),
            click.option(
                "--log-format",
                type=click.Choice(["text", "json"], case_sensitive=False),
                envvar="BGTASKEX_LOG_FORMAT",
                callback=remember,
                expose_value=False,
                help="Log lines as plain text (default) or one JSON object each.",
            ),
            click.option(
                "--log-level",
                type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
                envvar="BGTASKEX_LOG_LEVEL",
                callback=remember,
                expose_value=False,
                help="Logging level on stderr (default WARNING).",
            ),
        ],
    )


def when(_ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    """An option's `2h`, `7d` or `2026-11-28` as an aware datetime."""
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


def duration(_ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """An option's `45s`, `7d` or `12h` in seconds."""
    if value is None:
        return None
    try:
        return parse_duration(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


def positive_duration(
    _ctx: click.Context, param: click.Parameter, value: str | None
) -> float | None:
    """An option's duration that must pass (`bounds.POSITIVE_DURATION`), in seconds."""
    if value is None:
        return None
    from ..bounds import POSITIVE_DURATION

    try:
        return POSITIVE_DURATION.seconds(value)
    except ValueError as err:
        raise click.BadParameter(str(err), param=param) from None


def filter_options(func: F) -> F:
    """The task filters shared by list, purge and retry --all-failed."""
    return _decorated(
        func,
        [
            click.option(
                "--status",
                "statuses",
                multiple=True,
                metavar="STATUS",
                help="Only this status (repeatable); 'active' = every status not ended.",
            ),
            click.option(
                "--type", "types", multiple=True, type=click.Choice(["interactive", "cron"])
            ),
            click.option("--queue", "queues", multiple=True, metavar="QUEUE", help="Repeatable."),
            click.option(
                "--name", "name_glob", metavar="GLOB", help="Task name, * and ? (any case)."
            ),
            click.option(
                "--since", callback=when, metavar="WHEN", help="Created since: 2h, 7d, 2026-11-28."
            ),
            click.option("--until", callback=when, metavar="WHEN", help="Created before WHEN."),
        ],
    )


def task_filter(
    statuses: tuple[str, ...] = (),
    types: tuple[str, ...] = (),
    queues: tuple[str, ...] = (),
    name_glob: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    ended_before: datetime | None = None,
) -> TaskFilter:
    """The `TaskFilter` of the `filter_options` a command was given (`inputs.task_filter`,
    which the web's Tasks page shares)."""
    from ..inputs import task_filter as checked

    return checked(statuses, types, queues, name_glob, since, until, ended_before)


def echo_json(value: Any) -> None:
    """`value` as JSON on stdout (the encoding of bgtaskex.views: datetimes, enums)."""
    from ..views import dumps

    click.echo(dumps(value))


def print_rich(*renderables: Any) -> None:
    """Print rich tables and texts on stdout."""
    from rich.console import Console

    # Piped output keeps whole lines for grep; a terminal gets its own width.
    tty = sys.stdout.isatty()
    console = Console(highlight=False, soft_wrap=False, width=None if tty else 200)
    if tty:
        for renderable in renderables:
            console.print(renderable)
        return
    with console.capture() as captured:  # tables pad their cells: not for a pipe
        for renderable in renderables:
            console.print(renderable)
    for line in captured.get().splitlines():
        click.echo(line.rstrip())
