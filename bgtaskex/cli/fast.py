"""`bgtaskex run-once` without click: what cron calls every minute, mostly to find nothing
due, started in a fraction of the time that importing click alone takes.

Only a command line that this module reads exactly as click would is taken here: `run-once`
with its own options, after `--config` or `--database-url` at most, each value given with
`--name value` or `--name=value`. Anything else (help, another command, another option, a
value click would refuse or convert) returns None before anything is done, and click
parses the command line as ever (cli/main.py). What the command then does is
cli/once.py's, the same for both; its exceptions map to the same exit codes and lines
(cli/exits.py), and its lines are written as click.echo writes them.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: Global options (before `run-once`) taken here: option -> the State's key.
_GLOBAL = {"--config": "config", "--database-url": "database_url"}
#: `run-once`'s options that take a value: option -> key (`remember`ed, but --wait, --process).
_VALUES = {
    "--max-execution-time": "max_execution_time",
    "--kill-after": "kill_after",
    "--lock-file": "lock_file",
    "--wait": "wait",
    "--process": "process",
}
#: `run-once`'s flags: option -> (key, value).
_FLAGS = {
    "--json": ("as_json", True),
    "-q": ("quiet", True),
    "--quiet": ("quiet", True),
    "--progress": ("progress", True),
    "--no-progress": ("progress", False),
}
#: Global options that read these variables convert their value (click.Choice): any value
#: other than a choice leaves the command line to click, which says what is wrong.
_CHOICES = {
    "BGTASKEX_LOG_FORMAT": ("text", "json"),
    "BGTASKEX_LOG_LEVEL": ("debug", "info", "warning", "error"),
}


class _Line:
    """A `run-once` command line as click reads it (a plain class: creating a dataclass
    costs about a millisecond at every start)."""

    def __init__(self) -> None:
        self.config_file: str | None = None
        self.overrides: dict[str, Any] = {}
        self.process: str | None = None
        self.wait = "0"
        self.progress: bool | None = None
        self.as_json = False
        self.quiet = False


def run_once(argv: list[str]) -> int | None:
    """The exit code of `bgtaskex ARGV` run here, or None (nothing done) when click is to
    parse `argv`."""
    line = _parse(argv)
    if line is None:
        return None
    from ..bounds import parse_duration

    try:
        wait = parse_duration(line.wait)
    except ValueError:
        return None  # click's message for it
    from .once import run_once_command
    from .state import State

    state = State(config_file=line.config_file, overrides=line.overrides, log_later=True)
    try:
        try:
            run_once_command(
                state,
                line.process,
                wait,
                progress=line.progress,
                as_json=line.as_json,
                quiet=line.quiet,
                echo=_out,
            )
        finally:
            state.close()  # as click closes its context, before the error is said
    except (EOFError, KeyboardInterrupt):  # click: a blank line, then Abort
        from .exits import interrupted

        _err("")
        return interrupted(_err)
    except Exception as err:
        import errno

        if isinstance(err, OSError) and err.errno == errno.EPIPE:  # click: exit 1, silently
            _silence_stdout()
            return 1
        from .exits import exit_code

        state.start_logging()  # an internal error's traceback, at DEBUG
        return exit_code(err, _out, _err)
    return 0


def _parse(argv: list[str]) -> _Line | None:
    for name, choices in _CHOICES.items():
        value = os.environ.get(name)
        if value and value.casefold() not in choices:
            return None
    line = _Line()
    args = list(argv)
    command = False
    while args:
        arg = args.pop(0)
        if not command and arg == "run-once":
            command = True
            continue
        if command and arg in _FLAGS:
            key, flag = _FLAGS[arg]
            setattr(line, key, flag)
            continue
        name, equals, value = arg.partition("=")
        keys = _VALUES if command else _GLOBAL
        if name not in keys:
            return None
        if not equals:
            if not args or args[0].startswith("-"):
                return None  # click's to take or refuse
            value = args.pop(0)
        if not value:
            return None
        _take(line, keys[name], value)
    return line if command else None


def _take(line: _Line, key: str, value: str) -> None:
    """Record an option's value as the option's callback (`common.remember`) would."""
    if key == "config":
        line.config_file = value
    elif key in ("wait", "process"):
        setattr(line, key, value)
    else:
        line.overrides[key] = value


def _out(text: str) -> None:
    _write(text, err=False)


def _err(text: str) -> None:
    _write(text, err=True)


def _write(text: str, *, err: bool) -> None:
    """`click.echo(text, err=err)`: click itself for what it would change (an ANSI escape
    off a terminal, text the stream cannot encode)."""
    stream = sys.stderr if err else sys.stdout
    if stream is None:
        return
    if "\x1b" not in text:
        try:
            stream.write(text + "\n")
        except UnicodeEncodeError:
            pass
        else:
            stream.flush()
            return
    import click

    click.echo(text, err=err)


def _silence_stdout() -> None:
    """No error at exit for output that can no longer be flushed to a closed pipe."""
    import contextlib

    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, AttributeError, ValueError):
            os.dup2(devnull, stream.fileno())
